"""A node's checkpoint after a run or a feasibility answer is best effort: a portal out
of reach is logged, never an error that would lose the answer, and the store is free
again at once (a real node home, a closed loopback port as the portal)."""

from __future__ import annotations

import logging

import pytest

from federation.node.enrol import checkpoint_best_effort, ensure_node_key
from federation.node.home import NodeHome
from federation.node.settings import StoredNodeSettings
from tests.fixtures.net import free_port

pytestmark = pytest.mark.unit


def test_an_unreachable_portal_is_logged_and_the_store_left_free(tmp_path, caplog):
    closed = f"http://127.0.0.1:{free_port()}"
    home = NodeHome.create(tmp_path / "node", StoredNodeSettings(
        hospital_id="hospital-a", portal_url=closed, keycloak_url=closed),
        {"keys": []})
    home.close()
    assert checkpoint_best_effort(home.path) is None  # no key, no credentials: nothing to do
    home.save_credentials("tre-node-hospital-a", "secret")
    ensure_node_key(home)
    with caplog.at_level(logging.WARNING, logger="federation.node.enrol"):
        assert checkpoint_best_effort(home.path) is None
    assert "no checkpoint sent" in caplog.text and "cannot reach" in caplog.text
    reopened = NodeHome(home.path)
    assert reopened.audit.head()[0] == 0  # the store opens: no lock held, nothing written
