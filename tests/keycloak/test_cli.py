"""`tre keycloak up/status/bootstrap/token/down` against a second, real Keycloak.

Runs in its own folder (TRE_KEYCLOAK_DATA_DIR) so the developer's instance is
never touched; checks that up and down are idempotent, through the CLI and the API.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from access_control.keycloak import oidc, runner

pytestmark = pytest.mark.integration


def tre_keycloak(*args: str):
    from tre.cli.keycloak_cmd import app

    return CliRunner().invoke(app, list(args))


def test_up_status_bootstrap_token_down(tmp_path: Path, monkeypatch) -> None:
    data_dir = tmp_path / "kc"
    monkeypatch.setenv("TRE_KEYCLOAK_DATA_DIR", str(data_dir))
    port = runner.free_port()
    try:
        first = tre_keycloak("up", "--port", str(port))
        assert first.exit_code == 0, first.output
        assert f"started at http://127.0.0.1:{port}" in first.output

        again = tre_keycloak("up")
        assert again.exit_code == 0 and "already running" in again.output
        server, started = runner.ensure_running()
        assert not started and server.port == port
        moved = tre_keycloak("up", "--port", str(port + 1))
        assert moved.exit_code == 1 and "tre keycloak down" in moved.output

        status = json.loads(tre_keycloak("status", "--json").output)
        assert status["running"] and status["base_url"] == f"http://127.0.0.1:{port}"
        assert "admin_password" not in status
        assert stat.S_IMODE(os.stat(data_dir / "state.json").st_mode) == 0o600

        boot = tre_keycloak("bootstrap", "--hospitals", "hospital-x")
        assert boot.exit_code == 0, boot.output
        saved = json.loads((data_dir / "bootstrap.json").read_text())
        assert stat.S_IMODE(os.stat(data_dir / "bootstrap.json").st_mode) == 0o600
        assert saved["hospitals"]["hospital-x"]["client_secret"]

        token = tre_keycloak("token", "rev1")
        assert token.exit_code == 0, token.output
        claims = oidc.unverified_claims(token.output.strip())
        assert "reviewer" in claims["realm_access"]["roles"] and "tre-portal" in claims["aud"]
        refused = tre_keycloak("token", "rev1", "--password", "wrong")
        assert refused.exit_code == 1 and "invalid_grant" in refused.output

        down = tre_keycloak("down")
        assert down.exit_code == 0 and "stopped" in down.output
        assert not server.is_answering()
        down_again = tre_keycloak("down")
        assert down_again.exit_code == 0 and "not running" in down_again.output
        assert json.loads(tre_keycloak("status", "--json").output)["running"] is False
        assert runner.stop() is False
    finally:
        runner.stop(data_dir)
