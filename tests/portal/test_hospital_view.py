"""The node operator's view: runs on their hospital's data and ε spent, nobody else's."""

from __future__ import annotations

import pytest

from tests.fixtures.portal import approved_permit, bearer
from tre.portal.context import utcnow
from tre.portal.store import runs as run_store

pytestmark = pytest.mark.integration


def test_operator_sees_runs_on_their_hospital_only(api, keycloak):
    permit = approved_permit(api, keycloak)  # names hospital-a and hospital-b
    with api.app.state.portal.db.transaction() as cur:
        run_store.insert_run(cur, {"id": "run_x", "permit_id": permit["id"],
                                   "holder_sub": permit["holder_sub"],
                                   "holder_username": "alice", "params": {},
                                   "results_dir": "/nonexistent", "created_at": utcnow()})
        run_store.update_run(cur, "run_x", utcnow(), state="completed",
                             epsilon_per_node={"hospital-a": 3.5, "hospital-b": 2.0})
    operator = bearer(keycloak.token("nodeop1"))
    mine = api.get("/v1/runs/hospitals/hospital-a", headers=operator)
    assert mine.status_code == 200
    assert mine.json()["epsilon_spent"] == {"pneumonia": 3.5}
    assert [r["run_id"] for r in mine.json()["runs"]] == ["run_x"]
    other = api.get("/v1/runs/hospitals/hospital-b", headers=operator)
    assert other.status_code == 403 and "hospital-a" in other.json()["detail"]
    assert api.get("/v1/runs/hospitals/hospital-c",
                   headers=bearer(keycloak.token("auditor1"))).json()["runs"] == []
    assert api.get("/v1/runs/hospitals/hospital-a",
                   headers=bearer(keycloak.token("alice"))).status_code == 403
