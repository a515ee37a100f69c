"""The node's one token source: its own Keycloak URL and realm, for every portal call,
one token shared by its tasks until shortly before it expires."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from federation.node.home import TOKEN_CACHE_FILE, NodeHome
from federation.node.portal_client import PortalClient, PortalError
from federation.node.revocations import REVOKED_CACHE_FILE, portal_revocations
from tests.fixtures.portal import node_of

pytestmark = pytest.mark.integration


def test_revocations_use_the_keycloak_of_node_init_not_the_environment(
    live_portal, keycloak, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`tre node init --keycloak-url` stores the node's Keycloak; a different (here
    unreachable) default in the environment must not be what the revocation pull uses,
    or the node falls back to its cache and, a day later, refuses every run."""
    monkeypatch.setenv("TRE_KEYCLOAK_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("TRE_KEYCLOAK_REALM", "not-the-realm")
    home = node_of(tmp_path / "node", live_portal.url, keycloak)
    revs = portal_revocations(home)
    home.db.close()
    assert revs.source == "portal"  # fetched with a valid token, not from a cache
    assert (home.path / REVOKED_CACHE_FILE).exists()


def test_a_node_initialised_with_its_own_keycloak_fetches_revocations_with_its_token(
    live_portal, keycloak, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The issue's acceptance test, through the command an operator runs: `tre node init
    --keycloak-url --keycloak-realm` writes them to node.toml, where they beat the
    environment's shared (here unreachable) default."""
    from typer.testing import CliRunner

    from tre.cli.main import app

    monkeypatch.setenv("TRE_KEYCLOAK_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("TRE_KEYCLOAK_REALM", "not-the-realm")
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps(keycloak.client_credentials("hospital-a")))
    path = tmp_path / "node"
    result = CliRunner().invoke(app, [
        "node", "init", "--hospital-id", "hospital-a", "--portal", live_portal.url,
        "--insecure", "--offline-pseudonyms", "--home", str(path),
        "--credentials-file", str(creds), "--keycloak-url", keycloak.base_url,
        "--keycloak-realm", keycloak.realm], catch_exceptions=False)
    assert result.exit_code == 0, result.output + result.stderr
    home = NodeHome(path)
    revs = portal_revocations(home)
    home.db.close()
    assert revs.source == "portal"  # fetched with a valid token, not from a cache


def test_tasks_of_one_home_share_one_token_until_it_expires(
    live_portal, keycloak, tmp_path: Path,
) -> None:
    """Flower starts a process per task: the second task's client must take the token the
    first one cached in the home (Keycloak issues a different token for every grant, so
    equal tokens mean one grant), from a 0600 file, and never write it to the audit."""
    home = node_of(tmp_path / "node", live_portal.url, keycloak)
    first = PortalClient.for_home(home).access_token()
    cache = home.path / TOKEN_CACHE_FILE
    assert cache.exists() and stat.S_IMODE(cache.stat().st_mode) == 0o600
    second = PortalClient.for_home(NodeHome(home.path)).access_token()
    assert second == first
    # a token about to expire is not handed out: a new grant replaces it
    entry = json.loads(cache.read_text())
    cache.write_text(json.dumps({**entry, "expires_at": time.time() + 5}))
    renewed = PortalClient.for_home(home).access_token()
    assert renewed != first and json.loads(cache.read_text())["access_token"] == renewed
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    portal_revocations(home)
    assert renewed not in "".join(home.audit.export_jsonl())
    home.db.close()


def test_a_token_cached_for_another_keycloak_is_not_reused(
    live_portal, keycloak, tmp_path: Path,
) -> None:
    """The cache is keyed to the token endpoint (and client): after the node's Keycloak
    URL changed, the cached token is not sent; the new Keycloak is asked (here it is not
    running, so the grant fails)."""
    home = node_of(tmp_path / "node", live_portal.url, keycloak)
    PortalClient.for_home(home).access_token()
    home.update_config(keycloak_url="http://127.0.0.1:9")
    with pytest.raises(PortalError, match="cannot reach http://127.0.0.1:9/realms/"):
        PortalClient.for_home(NodeHome(home.path)).access_token()
    home.db.close()


def test_a_token_the_portal_refuses_is_dropped_and_renewed_once(
    live_portal, keycloak, tmp_path: Path,
) -> None:
    """A cached token the portal answers 401 to (e.g. Keycloak's keys changed) is dropped
    and the call retried with a fresh one, which is then the cached token."""
    home = node_of(tmp_path / "node", live_portal.url, keycloak)
    client = PortalClient.for_home(home)
    client.access_token()
    cache = home.path / TOKEN_CACHE_FILE
    entry = json.loads(cache.read_text())
    cache.write_text(json.dumps({**entry, "access_token": "not-a-token"}))
    snapshot = PortalClient.for_home(home).consent_snapshot(0)
    assert snapshot.kind == "full"
    assert json.loads(cache.read_text())["access_token"] not in ("not-a-token", "")
    home.db.close()
