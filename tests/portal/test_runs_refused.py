"""A run starts only under an active permit its holder owns, within the permit's caps."""

from __future__ import annotations

import pytest

from access_control.run_credentials import ReportKey
from tests.fixtures.net import free_port
from tests.fixtures.portal import APP_HASH, APP_ID, approved_permit, bearer

pytestmark = pytest.mark.integration


@pytest.fixture
def permit_id(api, keycloak) -> str:
    return approved_permit(api, keycloak)["id"]


def runs_in_store(api) -> int:
    with api.app.state.portal.db.reader() as cur:
        return cur.execute("SELECT count(*) FROM run").fetchone()[0]


def test_someone_elses_permit_is_as_missing_as_one_that_does_not_exist(api, keycloak,
                                                                        permit_id):
    bob = bearer(keycloak.token("bob"))
    resp = api.post("/v1/runs", json={"permit_id": permit_id}, headers=bob)
    read = api.get(f"/v1/permits/{permit_id}", headers=bob)
    assert resp.status_code == read.status_code == 404
    assert resp.json() == read.json()
    assert runs_in_store(api) == 0
    # a researcher who is also a reviewer may read every permit: they are told why instead
    keycloak.ensure_user("rita", roles=["researcher", "reviewer"])
    resp = api.post("/v1/runs", json={"permit_id": permit_id},
                    headers=bearer(keycloak.token("rita")))
    assert resp.status_code == 403 and "permit holder" in resp.json()["detail"]


def test_revoked_permit_is_409(api, keycloak, permit_id):
    api.post(f"/v1/permits/{permit_id}/revoke", json={"reason": "ethics lapsed"},
             headers=bearer(keycloak.token("rev1")))
    resp = api.post("/v1/runs", json={"permit_id": permit_id},
                    headers=bearer(keycloak.token("alice")))
    assert resp.status_code == 409 and "revoked" in resp.json()["detail"]
    assert runs_in_store(api) == 0


def test_expired_permit_is_409(api, keycloak, permit_id):
    with api.app.state.portal.db.transaction() as cur:
        cur.execute("UPDATE permit SET expires_at = now() - INTERVAL 1 HOUR WHERE id = ?",
                    [permit_id])
    resp = api.post("/v1/runs", json={"permit_id": permit_id},
                    headers=bearer(keycloak.token("alice")))
    assert resp.status_code == 409 and "expired" in resp.json()["detail"]
    # the refusal did not roll the expiry back: it is stored and audited (invariant 4)
    portal = api.app.state.portal
    with portal.db.reader() as cur:
        assert cur.execute("SELECT status FROM permit WHERE id = ?",
                           [permit_id]).fetchone()[0] == "expired"
    assert [e.object_id for e in portal.audit.entries()
            if e.action == "permit.expire"] == [permit_id]


@pytest.mark.parametrize(("extra", "named"), [
    ({"epsilon": 50.0}, "above the permit's cap"),
    ({"delta": 1e-3}, "above the permit's cap"),
    ({"min_hospitals": 5}, "hospitals the permit names"),
    ({"model": "gpt-5"}, "catalogue"),
    ({"rounds": 0}, "rounds"),
])
def test_above_caps_or_nonsense_is_422(api, keycloak, permit_id, extra, named):
    resp = api.post("/v1/runs", json={"permit_id": permit_id} | extra,
                    headers=bearer(keycloak.token("alice")))
    assert resp.status_code == 422 and named in resp.text
    assert runs_in_store(api) == 0


def test_reviewer_cannot_start_runs(api, keycloak, permit_id):
    resp = api.post("/v1/runs", json={"permit_id": permit_id},
                    headers=bearer(keycloak.token("rev1")))
    assert resp.status_code == 403


def test_secagg_run_takes_its_weight_bound_from_the_catalogue(make_portal, keycloak, tmp_path):
    """Three hospitals turn SecAgg+ on: the run starts only once every permitted dataset
    publishes a count, and its weight bound covers the largest (a shown 2340 stands for
    up to 2344 people, whose training count a node may show as 2345)."""
    api = make_portal(superlink=f"127.0.0.1:{free_port()}",  # none there: started runs fail
                      superlink_report_key=ReportKey.load_or_create(tmp_path / "link").public)
    assert api.post("/v1/apps", headers=bearer(keycloak.token("admin1")), json={
        "app_id": APP_ID, "app_hash": APP_HASH, "description": "DP CNN"}).status_code == 201
    hospitals = ["hospital-a", "hospital-b", "hospital-c"]
    permit = approved_permit(api, keycloak, datasets=[
        {"node_id": h, "dataset_id": "pneumonia"} for h in hospitals])
    alice = bearer(keycloak.token("alice"))

    def publish(hospital: str, subjects: object) -> None:
        resp = api.post("/v1/catalogue/datasets", headers=bearer(
            keycloak.client_token(hospital)), json={
                "hospital_id": hospital, "dataset_id": "pneumonia", "kind": "imaging",
                "title": "Paediatric chest X-rays", "descriptor": {
                    "counts": {"subjects": subjects}, "disclosure": {"k": 10, "rounding": 5}}})
        assert resp.status_code == 201, resp.text

    publish("hospital-a", 2340)
    publish("hospital-b", "<10")
    refused = api.post("/v1/runs", json={"permit_id": permit["id"]}, headers=alice)
    assert refused.status_code == 409, refused.text
    assert "published for hospital-c/pneumonia" in refused.json()["detail"]
    assert runs_in_store(api) == 0

    publish("hospital-c", 1560)
    started = api.post("/v1/runs", json={"permit_id": permit["id"]}, headers=alice)
    assert started.status_code == 202, started.text
    assert started.json()["params"]["secagg"] is True
    assert started.json()["params"]["secagg-max-weight"] == 2345
