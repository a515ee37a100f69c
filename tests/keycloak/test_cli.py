"""`tre keycloak up/status/bootstrap/token/down` against real Keycloaks.

Each test points TRE_KEYCLOAK_DATA_DIR at its own instance, so the developer's
`tre keycloak up` instance is never touched.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from access_control.keycloak import oidc
from access_control.keycloak import server as kc_server

pytestmark = pytest.mark.integration


def tre_keycloak(*args: str):
    from tre.cli.keycloak_cmd import app

    return CliRunner().invoke(app, list(args))


def test_commands_against_the_running_session_keycloak(keycloak, monkeypatch) -> None:
    data_dir = keycloak.server.data_dir
    monkeypatch.setenv("TRE_KEYCLOAK_DATA_DIR", str(data_dir))

    again = tre_keycloak("up")
    assert again.exit_code == 0 and "already running" in again.output, again.output
    server, started = kc_server.ensure_running()
    assert not started and server.pid == keycloak.server.pid
    moved = tre_keycloak("up", "--port", str(keycloak.server.port + 1))
    assert moved.exit_code == 1 and "tre keycloak down" in moved.output

    status = json.loads(tre_keycloak("status", "--json").output)
    assert status["running"] and status["base_url"] == keycloak.base_url
    assert "admin_password" not in status
    assert stat.S_IMODE(os.stat(data_dir / "state.json").st_mode) == 0o600

    boot = tre_keycloak("bootstrap")  # idempotent: the session realm stays as it was
    assert boot.exit_code == 0, boot.output
    saved = json.loads((data_dir / "bootstrap.json").read_text())
    assert stat.S_IMODE(os.stat(data_dir / "bootstrap.json").st_mode) == 0o600
    assert saved["hospitals"] == keycloak.bootstrap["hospitals"]

    token = tre_keycloak("token", "rev1")
    assert token.exit_code == 0, token.output
    claims = oidc.unverified_claims(token.output.strip())
    assert "reviewer" in claims["realm_access"]["roles"] and "tre-portal" in claims["aud"]
    refused = tre_keycloak("token", "rev1", "--password", "wrong")
    assert refused.exit_code == 1 and "invalid_grant" in refused.output


def test_up_and_down_are_idempotent(tmp_path: Path, monkeypatch) -> None:
    """A second Keycloak of its own: started, found running, stopped, found stopped."""
    data_dir = tmp_path / "kc"
    monkeypatch.setenv("TRE_KEYCLOAK_DATA_DIR", str(data_dir))
    port = kc_server.free_port()
    try:
        first = tre_keycloak("up", "--port", str(port))
        assert first.exit_code == 0, first.output
        assert f"started at http://127.0.0.1:{port}" in first.output
        server, started = kc_server.ensure_running()
        assert not started and server.port == port and server.is_running()
        assert tre_keycloak("up").output.count("already running") == 1

        down = tre_keycloak("down")
        assert down.exit_code == 0 and "stopped" in down.output
        assert not server.is_answering() and not server.is_alive()
        down_again = tre_keycloak("down")
        assert down_again.exit_code == 0 and "not running" in down_again.output
        assert json.loads(tre_keycloak("status", "--json").output)["running"] is False
        assert kc_server.stop() is False
    finally:
        kc_server.stop(data_dir)
