"""An auditor verifies a hospital node's log remotely, end to end: the node operator
uploads the signed log through the portal, the auditor checks it against the signed
checkpoints the portal holds and publishes the result. A cut tail, a rewritten chain
and a forked history are each named by the checkpoint they contradict; the portal's
own log is checked the same way (real Keycloak, the portal over HTTP, the `tre`
command as its own process, a real node home and its enrolled key)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import load_ssh_private_key

import tre
from federation.node.enrol import (
    generate_key_pair,
    key_path,
    public_key,
    send_checkpoint,
    signed_audit_export,
)
from federation.node.home import NodeHome
from federation.node.portal_client import PortalClient
from tests.fixtures.audit import rechain
from tests.fixtures.portal import bearer, enrolled_node
from tre.core.audit import AuditEntry, canonical_json
from tre.core.checkpoints import SignedExport

pytestmark = pytest.mark.integration

REPO = Path(tre.__file__).resolve().parents[1]


def tre_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`tre …` as its own process, running this checkout's code; its output with the
    console's line wrapping undone."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "tre.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    return replace_output(done)


def replace_output(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    done.stdout = " ".join(done.stdout.split())
    done.stderr = " ".join(done.stderr.split())
    return done


@pytest.fixture
def node(portal, keycloak, tmp_path) -> NodeHome:
    return enrolled_node(portal, keycloak, tmp_path / "node", rows=10)


def replace_log(home: NodeHome, entries: list[AuditEntry]) -> None:
    """What a hostile operator with write access to node.duckdb does."""
    with home.db.transaction() as cur:
        cur.execute("DELETE FROM audit_log")
        for e in entries:
            cur.execute("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [e.seq, e.ts, e.actor, e.action, e.object_type, e.object_id,
                         canonical_json(e.details), e.prev_hash, e.hash])


def upload_without_checkpoint(home: NodeHome) -> None:
    """A hostile node sends its doctored log, signed, but no checkpoint that would
    betray it to the portal first."""
    export = signed_audit_export(home)
    PortalClient.for_home(home).upload_audit_export(
        "hospital-a", {"jsonl": export.jsonl, "signature": export.signature})


def test_an_auditor_verifies_a_nodes_log_remotely_and_names_the_checkpoint_it_contradicts(
        portal, node, keycloak):
    auditor = keycloak.token("auditor1")
    verify = ["audit", "verify", "--portal", portal.url, "--party", "hospital-a", "--record",
              "--token", auditor]
    honest = node.audit.entries()
    send_checkpoint(node)  # row 10, as the node's daily timer sends it
    node.close()  # the operator's command opens node.duckdb itself

    uploaded = tre_cli("node", "audit", "export", "--upload", "--home", str(node.path))
    assert uploaded.returncode == 0, uploaded.stderr
    assert "10 rows" in uploaded.stdout
    intact = tre_cli(*verify)
    assert intact.returncode == 0 and "audit chain intact" in intact.stdout, intact.stdout
    published = httpx.get(f"{portal.url}/v1/audit/verifications").json()
    assert [(v["party"], v["ok"], v["row_count"], v["checkpoint_seq"]) for v in published] \
        == [("hospital-a", True, 10, 10)]
    assert "verified_by" not in published[0]
    metrics = httpx.get(f"{portal.url}/metrics").text
    assert 'tre_audit_verification_ok{party="hospital-a"} 1.0' in metrics
    assert 'tre_audit_checkpoint_seq{party="hospital-a"} 10.0' in metrics

    # the tail cut: the node may even checkpoint its new head, the old one stays held
    with node.db.transaction() as cur:
        cur.execute("DELETE FROM audit_log WHERE seq > 7")
    node.close()
    assert tre_cli("node", "audit", "export", "--upload", "--home",
                   str(node.path)).returncode == 0
    cut = tre_cli(*verify)
    assert cut.returncode == 1, cut.stdout
    assert "ends at row 7" in cut.stdout and "checkpoint at row 10" in cut.stdout
    assert "tail was cut" in cut.stdout
    held = {c["seq"]: c["at"] for c in
            httpx.get(f"{portal.url}/v1/audit/checkpoints/hospital-a").json()}
    assert sorted(held) == [7, 10]

    # the whole chain rewritten with fresh hashes (a row's details changed)
    replace_log(node, rechain([replace(e, details={"records": 0}) if e.seq == 3 else e
                               for e in honest]))
    assert node.audit.verify().ok  # the chain alone looks intact
    upload_without_checkpoint(node)
    rewritten = tre_cli(*verify)
    assert rewritten.returncode == 1
    assert f"row 7 is not the row hospital-a signed in its checkpoint of {held[7]}" \
        in rewritten.stdout and "rewritten or its history forked" in rewritten.stdout

    # a forked history: the same first six rows, then another story
    replace_log(node, honest[:6])
    for i in range(4):
        node.audit.record(actor="operator", action="data.export", object_type="dataset",
                          object_id=str(i))
    upload_without_checkpoint(node)
    forked = tre_cli(*verify)
    assert forked.returncode == 1 and "row 7 is not the row hospital-a signed" in forked.stdout

    latest = httpx.get(f"{portal.url}/v1/audit/verifications").json()[0]
    assert (latest["ok"], latest["checkpoint_seq"]) == (False, 7)
    assert "history forked" in latest["problem"]
    public = {a["party"]: a for a in httpx.get(f"{portal.url}/v1/transparency").json()["audit"]}
    assert public["hospital-a"]["checkpoint"]["seq"] == 10  # the newest row signed
    assert public["hospital-a"]["verification"]["ok"] is False
    assert public["portal"]["checkpoint"]["seq"] >= 1 and public["portal"]["verification"] is None
    metrics = httpx.get(f"{portal.url}/metrics").text
    assert 'tre_audit_verification_ok{party="hospital-a"} 0.0' in metrics
    assert 'tre_audit_checkpoint_timestamp_seconds{party="portal"}' in metrics
    page = httpx.get(f"{portal.url}/transparency", headers={"Accept-Language": "fr"}).text
    row = page[page.index('data-party="hospital-a"'):].split("</tr>")[0]
    assert "ligne 10" in row and "rompu" in row and "point de contrôle de la ligne 7" in row

    actions = [e.action for e in portal.portal.audit.entries()]
    assert actions.count("audit.export_upload") == 4
    assert actions.count("audit.export_read") == 4
    assert actions.count("audit.verification") == 4


def test_only_the_node_uploads_its_own_log_signed_with_its_key_and_only_auditors_read_it(
        portal, node, keycloak):
    node_token = bearer(keycloak.client_token("hospital-a"))
    export = signed_audit_export(node)
    body = {"jsonl": export.jsonl, "signature": export.signature}
    url = f"{portal.url}/v1/audit/nodes/hospital-a/export"
    auditor = bearer(keycloak.token("auditor1"))
    missing = httpx.get(url, headers=auditor)
    assert missing.status_code == 404 and "tre node audit export --upload" in \
        missing.json()["detail"]

    other = httpx.post(f"{portal.url}/v1/audit/nodes/hospital-b/export", json=body,
                       headers=node_token)
    assert other.status_code == 403 and "hospital-b" in other.json()["detail"]
    stranger = load_ssh_private_key(generate_key_pair()[0], password=None)
    forged = SignedExport("hospital-a", export.jsonl).signed(stranger)
    refused = httpx.post(url, headers=node_token,
                         json={"jsonl": forged.jsonl, "signature": forged.signature})
    assert refused.status_code == 422
    assert "not signed by hospital-a's key" in refused.json()["detail"]
    not_rows = httpx.post(url, headers=node_token,
                          json={"jsonl": '{"pseudonym": "p1"}\n', "signature": export.signature})
    assert not_rows.status_code == 422 and "not JSON lines of audit rows" in \
        not_rows.json()["detail"]
    assert httpx.post(url, json=body, headers=node_token).status_code == 201

    assert httpx.get(url, headers=bearer(keycloak.token("alice"))).status_code == 403
    assert httpx.get(url, headers=node_token).status_code == 403
    got = httpx.get(url, headers=auditor).json()
    assert got["public_key"] == public_key(node) and got["row_count"] == 10
    assert SignedExport("hospital-a", got["jsonl"], got["signature"]).verify(
        load_ssh_private_key(key_path(node).read_bytes(), password=None).public_key())
    refusals = [e for e in portal.portal.audit.entries() if e.action == "audit.export_refused"]
    assert [e.object_id for e in refusals] == ["hospital-a"]
    verifications = f"{portal.url}/v1/audit/verifications"
    assert httpx.post(verifications, headers=node_token,
                      json={"party": "hospital-a", "ok": True, "rows": 1}).status_code == 403
    unknown = httpx.post(verifications, headers=auditor,
                         json={"party": "hospital-z", "ok": True, "rows": 1})
    assert unknown.status_code == 409 and "no checkpoint of hospital-z" in unknown.json()["detail"]
    assert httpx.get(verifications).json() == []


def test_the_portals_own_log_is_checked_against_its_checkpoints(portal, node, keycloak,
                                                               tmp_path: Path):
    for i in range(3):  # each one a row of the portal's chain, which it then checkpoints
        node.audit.record(actor="operator", action="data.read", object_type="dataset",
                          object_id=str(i))
        send_checkpoint(node)
    auditor = keycloak.token("auditor1")
    live = tre_cli("audit", "verify", "--portal", portal.url, "--party", "portal",
                   "--token", auditor)
    assert live.returncode == 0 and "audit chain intact" in live.stdout, live.stdout

    held = httpx.get(f"{portal.url}/v1/audit/checkpoints/portal").json()
    latest = {c["party"]: c for c in httpx.get(f"{portal.url}/v1/audit/checkpoints").json()}
    (tmp_path / "portal.json").write_text(json.dumps(held))
    (tmp_path / "portal.pub").write_text(latest["portal"]["public_key"])
    top = held[-1]
    assert top["seq"] == 3
    entries = portal.portal.audit.entries()[:3]
    copies = {
        "cut": entries[:2],
        "rewritten": rechain([replace(entries[0], actor="nobody"), *entries[1:]]),
        "forked": rechain([entries[0], replace(entries[1], action="permit.issue"),
                           entries[2]]),
    }
    at = {c["seq"]: c["at"] for c in held}
    findings = {
        "cut": f"the log ends at row 2, but portal signed a checkpoint at row 3 on {at[3]}: "
               "its tail was cut",
        "rewritten": f"row 1 is not the row portal signed in its checkpoint of {at[1]}: the "
                     "chain was rewritten or its history forked",
        "forked": f"row 2 is not the row portal signed in its checkpoint of {at[2]}",
    }
    for name, rows in copies.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(canonical_json(e.as_dict()) + "\n" for e in rows))
        out = tre_cli("audit", "verify", "--file", str(path), "--checkpoints",
                      str(tmp_path / "portal.json"), "--public-key", str(tmp_path / "portal.pub"))
        assert out.returncode == 1, (name, out.stdout)
        assert findings[name] in out.stdout, (name, out.stdout)
