"""Backups while running, verified restores, permit-key rotation, metrics."""

from __future__ import annotations

import shutil
import threading

import pytest
from typer.testing import CliRunner

from access_control.permits import verify_permit
from tests.fixtures.portal import APP_HASH, APP_ID, approved_permit, bearer, request_body
from tre.cli.main import app as cli
from tre.core.db import Database

pytestmark = pytest.mark.integration


def test_backup_while_writing_then_restore_verifies(make_portal, keycloak, tmp_path):
    state = tmp_path / "portal"
    api = make_portal(state)
    admin = bearer(keycloak.token("admin1"))
    api.post("/v1/apps", headers=admin,
             json={"app_id": APP_ID, "app_hash": APP_HASH, "description": "x"})
    alice = bearer(keycloak.token("alice"))
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            api.post("/v1/requests", json=request_body(), headers=alice)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        snaps = [api.post("/v1/admin/backup", headers=admin).json() for _ in range(3)]
    finally:
        stop.set()
        thread.join()
    for snap in snaps:
        assert len(snap["sha256"]) == 64
    after_backup = api.get("/v1/requests", headers=alice).json()
    api.__exit__(None, None, None)

    db_path = state / "portal.duckdb"
    runner = CliRunner()
    result = runner.invoke(cli, ["restore", snaps[-1]["path"], "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    assert "audit chain intact" in result.output
    restored = make_portal(state)
    ids = {r["id"] for r in restored.get("/v1/requests", headers=alice).json()}
    assert ids <= {r["id"] for r in after_backup}
    verdict = restored.get("/v1/audit/verify", headers=bearer(keycloak.token("auditor1"))).json()
    assert verdict["ok"]
    actions = [e["action"] for e in restored.get(
        "/v1/audit", params={"limit": 1000}, headers=bearer(keycloak.token("auditor1"))
    ).json()["entries"]]
    assert actions.count("store.backup") == 3
    assert actions.count("request.create") == len(ids)


def test_restore_refuses_a_tampered_snapshot(tmp_path, make_portal, keycloak):
    api = make_portal(tmp_path / "p")
    snap = api.post("/v1/admin/backup", headers=bearer(keycloak.token("admin1"))).json()
    doctored = tmp_path / "doctored.duckdb"
    shutil.copy(snap["path"], doctored)
    db = Database(doctored)
    with db.transaction() as cur:
        cur.execute("UPDATE audit_log SET actor = 'eve' WHERE seq = 1")
    db.close()
    target = tmp_path / "target.duckdb"
    target.write_bytes(b"original")
    result = CliRunner().invoke(cli, ["restore", str(doctored), "--db", str(target)])
    assert result.exit_code == 1 and "row 1" in result.output
    assert target.read_bytes() == b"original", "nothing replaced"


def test_node_store_backup_by_file(tmp_path):
    from federation.node.home import NodeHome
    from federation.node.settings import StoredNodeSettings

    home = NodeHome.create(tmp_path / "node", StoredNodeSettings(
        hospital_id="hospital-a", portal_url="http://x"), {"keys": []})
    home.audit.record(actor=home.actor, action="node.test", object_type="node", object_id="x")
    home.db.close()
    out = tmp_path / "snaps"
    result = CliRunner().invoke(cli, ["backup", "--db", str(home.path / "node.duckdb"),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    snap = next(out.glob("*.duckdb"))
    result = CliRunner().invoke(cli, ["audit", "verify", "--db", str(snap)])
    assert result.exit_code == 0 and "intact" in result.output


def test_key_rotation_keeps_old_permits_valid_and_is_audited(api, keycloak):
    old = approved_permit(api, keycloak)
    admin = bearer(keycloak.token("admin1"))
    assert api.post("/v1/permit-keys/rotate", headers=bearer(keycloak.token("rev1"))
                    ).status_code == 403
    rotated = api.post("/v1/permit-keys/rotate", headers=admin).json()
    assert rotated["active_kid"] != rotated["previous_kid"]
    new = approved_permit(api, keycloak)
    jwks = api.get("/v1/permit-keys").json()
    assert {k["kid"] for k in jwks["keys"]} == {rotated["active_kid"], rotated["previous_kid"]}
    assert verify_permit(old["token"], jwks).permit_id == old["id"]
    assert verify_permit(new["token"], jwks).permit_id == new["id"]
    # a node that pinned only the old key refuses permits signed after the rotation
    old_only = {"keys": [k for k in jwks["keys"] if k["kid"] == rotated["previous_kid"]]}
    with pytest.raises(Exception, match="unknown key"):
        verify_permit(new["token"], old_only)
    log = api.get("/v1/audit", params={"limit": 1000},
                  headers=bearer(keycloak.token("auditor1"))).json()["entries"]
    assert any(e["action"] == "permit_key.rotate" for e in log)


def test_metrics_report_states_and_decision_time(api, keycloak):
    approved_permit(api, keycloak)
    text = api.get("/metrics").text
    assert 'tre_requests{state="approved"} 1.0' in text
    assert 'tre_permits{state="active"} 1.0' in text
    assert "tre_median_days_to_decision" in text
