"""The catalogue: a node publishes only for its own hospital, only suppressed counts."""

from __future__ import annotations

import pytest

from tests.fixtures.portal import bearer

pytestmark = pytest.mark.integration


def descriptor(hospital: str, count: object = 120) -> dict:
    return {"hospital_id": hospital, "dataset_id": "pneumonia", "kind": "imaging",
            "title": "Paediatric chest X-rays",
            "descriptor": {"modalities": ["CR"], "counts": {"normal": "<10", "pneumonia": count}}}


def test_node_publishes_for_its_own_hospital_only(api, keycloak):
    own = api.post("/v1/catalogue/datasets", json=descriptor("hospital-a"),
                   headers=bearer(keycloak.client_token("hospital-a")))
    assert own.status_code == 201, own.text
    other = api.post("/v1/catalogue/datasets", json=descriptor("hospital-a", 130),
                     headers=bearer(keycloak.client_token("hospital-b")))
    assert other.status_code == 403 and "hospital-b" in other.json()["detail"]
    listed = api.get("/v1/catalogue", headers=bearer(keycloak.token("alice"))).json()
    assert [(d["hospital_id"], d["descriptor"]["counts"]["pneumonia"]) for d in listed] == [
        ("hospital-a", 120)]


def test_unsuppressed_small_count_is_refused_and_nothing_stored(api, keycloak):
    resp = api.post("/v1/catalogue/datasets", json=descriptor("hospital-c", 7),
                    headers=bearer(keycloak.client_token("hospital-c")))
    assert resp.status_code == 422 and "descriptor.counts.pneumonia" in resp.json()["detail"]
    assert api.get("/v1/catalogue", headers=bearer(keycloak.token("alice"))).json() == []


def test_researcher_cannot_publish(api, keycloak):
    resp = api.post("/v1/catalogue/datasets", json=descriptor("hospital-a"),
                    headers=bearer(keycloak.token("alice")))
    assert resp.status_code == 403
