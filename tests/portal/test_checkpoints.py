"""A node signs its audit chain head for the portal; an auditor then catches a cut tail
of the node's log against the checkpoints the portal holds (real Keycloak, the portal
over HTTP, a real node home and its enrolled key)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from federation.node.enrol import generate_key_pair, key_path, send_checkpoint
from federation.node.home import NodeHome
from tests.fixtures.portal import APP_HASH, APP_ID, LivePortal, bearer, enrolled_node
from tre.cli.main import app as cli
from tre.core.checkpoints import Checkpoint, verify_against

pytestmark = pytest.mark.integration


@pytest.fixture
def node(portal, keycloak, tmp_path) -> NodeHome:
    return enrolled_node(portal, keycloak, tmp_path / "node", rows=6)


def test_an_auditor_catches_a_cut_tail_against_the_portals_checkpoints(portal, node,
                                                                       tmp_path: Path):
    sent = send_checkpoint(node)
    assert (sent["seq"], sent["hash"]) == node.audit.head()
    latest = {c["party"]: c for c in httpx.get(f"{portal.url}/v1/audit/checkpoints").json()}
    assert latest["hospital-a"]["seq"] == sent["seq"] and "portal" in latest
    held = httpx.get(f"{portal.url}/v1/audit/checkpoints/hospital-a").json()
    (tmp_path / "checkpoints.json").write_text(json.dumps(held))
    (tmp_path / "node.pub").write_text(latest["hospital-a"]["public_key"])
    lines = list(node.audit.export_jsonl())
    (tmp_path / "full.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "cut.jsonl").write_text("\n".join(lines[:-2]) + "\n")
    check = ["audit", "verify", "--checkpoints", str(tmp_path / "checkpoints.json"),
             "--public-key", str(tmp_path / "node.pub"), "--file"]
    runner = CliRunner()
    assert runner.invoke(cli, [*check, str(tmp_path / "full.jsonl")]).exit_code == 0
    cut = runner.invoke(cli, [*check, str(tmp_path / "cut.jsonl")])
    assert cut.exit_code == 1 and "tail was cut" in cut.output, cut.output

    # the portal's own chain, which now records the node's checkpoint, is checkpointed too
    own = [Checkpoint(**c) for c in
           httpx.get(f"{portal.url}/v1/audit/checkpoints/portal").json()]
    key = serialization.load_ssh_public_key(latest["portal"]["public_key"].encode())
    entries = portal.app.state.portal.audit.entries()
    assert own and verify_against(entries, [c.verify(key) for c in own]).ok
    assert [e.action for e in entries].count("audit.checkpoint") == 1


def test_a_checkpoint_not_signed_by_the_enrolled_key_or_forking_is_refused_and_audited(
        portal, node, keycloak):
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    token = bearer(keycloak.client_token("hospital-a"))
    seq, digest = node.audit.head()
    stranger = load_ssh_private_key(generate_key_pair()[0], password=None)
    forged = Checkpoint("hospital-a", seq, digest, "2026-11-29T10:00:00+00:00").signed(stranger)
    body = {k: v for k, v in forged.as_dict().items() if k != "party"}
    resp = httpx.post(f"{portal.url}/v1/audit/checkpoints", json=body, headers=token)
    assert resp.status_code == 422 and "not signed by hospital-a's key" in resp.json()["detail"]

    send_checkpoint(node)
    mine = load_ssh_private_key(key_path(node).read_bytes(), password=None)
    fork = Checkpoint("hospital-a", seq, "f" * 64, "2026-11-29T11:00:00+00:00").signed(mine)
    resp = httpx.post(f"{portal.url}/v1/audit/checkpoints", headers=token,
                      json={k: v for k, v in fork.as_dict().items() if k != "party"})
    assert resp.status_code == 422 and "history forked" in resp.json()["detail"]
    refused = [e for e in portal.app.state.portal.audit.entries()
               if e.action == "audit.checkpoint_refused"]
    assert [e.object_id for e in refused] == ["hospital-a", "hospital-a"]
    assert httpx.get(f"{portal.url}/v1/audit/checkpoints/hospital-a").json()[0]["hash"] \
        == digest


def test_the_portal_signs_its_head_on_its_own_on_quiet_days_too(keycloak, tmp_path: Path):
    """No node checkpoint arrives, yet the portal's latest rows get a signed head
    (daily in production; every 0.3 s here)."""
    with LivePortal(keycloak, tmp_path / "portal", checkpoint_interval_s=0.3) as live:
        r = httpx.post(f"{live.url}/v1/apps", headers=bearer(keycloak.token("admin1")),
                       json={"app_id": APP_ID, "app_hash": APP_HASH, "description": "app"})
        assert r.status_code == 201, r.text
        newest = live.portal.audit.entries()[-1].seq
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            held = httpx.get(f"{live.url}/v1/audit/checkpoints/portal").json()
            if any(c["seq"] == newest for c in held):
                break
            time.sleep(0.2)
        assert any(c["seq"] == newest for c in held), held
