"""`tre login`: device authorization grant, private token file, refresh on expiry."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from access_control.keycloak import oidc
from tre.cli import login_cmd

pytestmark = pytest.mark.integration


def approving(keycloak, username: str):
    """A `show` callback that approves the device code in Keycloak's pages, as a user
    would in a browser, while the CLI polls."""
    errors: list[BaseException] = []

    def show(device: dict) -> None:
        def approve() -> None:
            try:
                keycloak.approve_device(device["verification_uri_complete"], username)
            except BaseException as exc:  # surfaced by the test below
                errors.append(exc)

        threading.Thread(target=approve, daemon=True).start()

    return show, errors


def test_device_login_stores_private_tokens_and_refreshes_them(keycloak, tmp_path: Path
                                                               ) -> None:
    path = tmp_path / "tokens.json"
    show, errors = approving(keycloak, "bob")
    record = login_cmd.device_login(keycloak.base_url, keycloak.realm, show=show, path=path)
    assert not errors
    assert record["username"] == "bob"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    first = login_cmd.access_token(path=path)
    claims = oidc.unverified_claims(first)
    assert claims["iss"] == keycloak.issuer and "researcher" in claims["realm_access"]["roles"]

    stored = json.loads(path.read_text())
    stored["expires_at"] = 0  # as if five minutes had passed
    path.write_text(json.dumps(stored))
    refreshed = login_cmd.access_token(path=path)
    assert refreshed != first
    assert oidc.unverified_claims(refreshed)["preferred_username"] == "bob"
    assert json.loads(path.read_text())["expires_at"] > stored["expires_at"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    stored = json.loads(path.read_text())
    stored.update(expires_at=0, refresh_token="not-a-token")
    path.write_text(json.dumps(stored))
    with pytest.raises(login_cmd.NotLoggedInError, match="tre login"):
        login_cmd.access_token(path=path)
    with pytest.raises(login_cmd.NotLoggedInError, match="tre login"):
        login_cmd.access_token(path=tmp_path / "missing.json")


def test_tre_login_command(keycloak, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    show, errors = approving(keycloak, "auditor1")
    real = oidc.device_authorization

    def start_and_approve(*args, **kwargs):
        device = real(*args, **kwargs)
        show(device)
        return device

    monkeypatch.setattr(login_cmd.oidc, "device_authorization", start_and_approve)
    app = __import__("typer").Typer()
    app.command()(login_cmd.login)
    result = CliRunner().invoke(app, ["--url", keycloak.base_url])
    assert result.exit_code == 0, result.output
    assert not errors
    assert "/realms/tre/device" in result.output and "logged in as auditor1" in result.output
    path = tmp_path / "config" / "tre" / "tokens.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    claims = oidc.unverified_claims(login_cmd.access_token())
    assert "auditor" in claims["realm_access"]["roles"]
