"""The node's one token source: its own Keycloak URL and realm, for every portal call."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.node.governance import REVOKED_CACHE_FILE, portal_revocations
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
