"""Versioned consent snapshots for nodes: full, delta, Parquet, audited pulls."""

from __future__ import annotations

import io

import pyarrow.parquet as pq
import pytest

from tests.consent.conftest import pseudonym
from tests.fixtures.portal import bearer

pytestmark = pytest.mark.integration


def test_snapshot_is_versioned_and_serves_deltas(api, keycloak):
    s1, s2 = bearer(keycloak.token("steward1")), bearer(keycloak.token("steward2"))
    node = bearer(keycloak.client_token("hospital-a"))

    empty = api.get("/v1/consents/snapshot", headers=node).json()
    assert (empty["kind"], empty["version"], empty["consents"]) == ("full", 0, [])

    a = api.post("/v1/consents", headers=s1, json={"subject": pseudonym("sa"),
                                                    "purposes": ["ai_training"]}).json()
    b = api.post("/v1/consents", headers=s2, json={"subject": pseudonym("sb"),
                                                    "purposes": ["statistics"],
                                                    "valid_to": "2030-01-01"}).json()
    full = api.get("/v1/consents/snapshot", headers=node).json()
    assert full["kind"] == "full" and full["version"] == 2
    assert {(c["subject"], c["organisation"]) for c in full["consents"]} == {
        (pseudonym("sa"), "org-a"), (pseudonym("sb"), "org-b")}
    assert next(c for c in full["consents"] if c["organisation"] == "org-b")["valid_to"] == \
        "2030-01-01"

    # every change takes the next version; a delta carries only what changed since
    api.post(f"/v1/consents/{a['id']}/withdraw", headers=s1)
    api.patch(f"/v1/consents/{b['id']}", headers=s2, json={"purposes": ["education"]})
    delta = api.get("/v1/consents/snapshot", params={"since": 2}, headers=node).json()
    assert delta["kind"] == "delta" and delta["since"] == 2 and delta["version"] == 4
    assert [(c["consent_id"], c["status"], c["version"]) for c in delta["consents"]] == [
        (a["id"], "withdrawn", 3), (b["id"], "active", 4)]
    assert api.get("/v1/consents/snapshot", params={"since": 3},
                   headers=node).json()["consents"][0]["purposes"] == ["education"]
    none = api.get("/v1/consents/snapshot", params={"since": 4}, headers=node).json()
    assert (none["kind"], none["consents"]) == ("delta", [])

    # a node ahead of the registry (say, after a portal restore) gets a full snapshot
    ahead = api.get("/v1/consents/snapshot", params={"since": 99}, headers=node).json()
    assert ahead["kind"] == "full" and len(ahead["consents"]) == 2
    assert api.get("/v1/consents/snapshot", params={"since": -1},
                   headers=node).status_code == 422

    # Parquet carries the same rows, the metadata in headers
    resp = api.get("/v1/consents/snapshot", params={"since": 2, "format": "parquet"},
                   headers=node)
    assert resp.headers["content-type"] == "application/vnd.apache.parquet"
    assert (resp.headers["x-consent-kind"], resp.headers["x-consent-version"]) == ("delta", "4")
    assert (resp.headers["x-consent-count"], resp.headers["x-consent-total"]) == ("2", "2")
    rows = pq.read_table(io.BytesIO(resp.content)).to_pylist()
    assert [(r["consent_id"], r["status"]) for r in rows] == [(a["id"], "withdrawn"),
                                                               (b["id"], "active")]

    entries = api.get("/v1/audit", params={"limit": 1000},
                      headers=bearer(keycloak.token("auditor1"))).json()["entries"]
    pulls = [e for e in entries if e["action"] == "consent.snapshot"]
    assert len(pulls) == 7 and all(e["details"]["hospital_id"] == "hospital-a" for e in pulls)
    assert (pulls[2]["details"]["kind"], pulls[2]["details"]["consents"]) == ("delta", 2)
