"""Consent receipts (JSON and printable HTML) and the DGA Art. 20 activity report."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from tests.consent.conftest import pseudonym
from tests.fixtures.portal import bearer, request_body
from tre.core.audit import canonical_json
from tre.portal.context import utcnow
from tre.portal.store import access as access_store
from tre.portal.store import airlock as airlock_store
from tre.portal.store import runs as run_store

pytestmark = pytest.mark.integration


def test_receipt_json_and_html(api, keycloak):
    s1 = bearer(keycloak.token("steward1"))
    c = api.post("/v1/consents", headers=s1, json={
        "subject": pseudonym("receipt"), "purposes": ["ai_training", "scientific_research"],
        "valid_from": "2026-02-01", "valid_to": "2031-01-31"}).json()
    api.post(f"/v1/consents/{c['id']}/withdraw", headers=s1, json={"reason": "asked by phone"})

    r = api.get(f"/v1/consents/{c['id']}/receipt", headers=s1).json()
    assert r["receipt_id"] == f"{c['id']}-v2" and r["status"] == "withdrawn"
    assert r["subject"] == pseudonym("receipt") and r["organisation"] == "org-a"
    assert "withdrawn" in r["statement"]
    digest = r.pop("digest")
    assert digest == hashlib.sha256(canonical_json(r).encode()).hexdigest()

    first = api.get(f"/v1/consents/{c['id']}/receipt", params={"version": 1}, headers=s1).json()
    assert first["status"] == "active" and first["version"] == 1 and first["latest_version"] == 2
    assert [p["code"] for p in first["purposes"]] == ["ai_training", "scientific_research"]
    assert (first["valid_from"], first["valid_to"]) == ("2026-02-01", "2031-01-31")
    # the receipt is anchored in the tamper-evident audit chain
    entries = api.get("/v1/audit", params={"limit": 1000},
                      headers=bearer(keycloak.token("auditor1"))).json()["entries"]
    anchor = next(e for e in entries if e["seq"] == first["audit"]["seq"])
    assert anchor["hash"] == first["audit"]["hash"] and anchor["action"] == "consent.record"
    assert anchor["object_id"] == c["id"]

    page = api.get(f"/v1/consents/{c['id']}/receipt", params={"format": "html", "version": 1},
                   headers=s1)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "Consent receipt" in html and pseudonym("receipt") in html
    assert "Scientific research related to health or care" in html
    assert first["audit"]["hash"] in html and "window.print()" in html
    assert "latest version is 2" in html

    # other organisations' stewards and researchers get no receipt
    assert api.get(f"/v1/consents/{c['id']}/receipt",
                   headers=bearer(keycloak.token("steward2"))).status_code == 404
    assert api.get(f"/v1/consents/{c['id']}/receipt",
                   headers=bearer(keycloak.token("alice"))).status_code == 403
    assert api.get(f"/v1/consents/{c['id']}/receipt", params={"version": 9},
                   headers=s1).status_code == 404
    # an auditor may read it
    assert api.get(f"/v1/consents/{c['id']}/receipt",
                   headers=bearer(keycloak.token("auditor1"))).status_code == 200


def _approved_permit(api, keycloak, **over) -> str:
    alice = bearer(keycloak.token("alice"))
    rid = api.post("/v1/requests", json=request_body(**over), headers=alice).json()["id"]
    api.post(f"/v1/requests/{rid}/submit", headers=alice)
    resp = api.post(f"/v1/requests/{rid}/reviews", headers=bearer(keycloak.token("rev1")),
                    json={"decision": "approve", "rationale": "proportionate and justified"})
    return resp.json()["permit_id"]


def _run(api, run_id: str, permit_id: str, epsilon_per_node: dict[str, float], *,
         attestations: list[dict] | None = None) -> None:
    """A run that ended as the runs service leaves it: completed, with each node's ε, and
    (with `attestations`) the output it submitted to the airlock."""
    with api.app.state.portal.db.transaction() as cur:
        permit = access_store.get_permit(cur, permit_id)
        run_store.insert_run(cur, {"id": run_id, "permit_id": permit_id,
                                   "holder_sub": permit["holder_sub"],
                                   "holder_username": "alice", "params": {},
                                   "results_dir": "/nonexistent", "created_at": utcnow()})
        output_id = None
        if attestations is not None:
            output_id = f"out_{run_id}"
            airlock_store.insert_output(cur, {
                "id": output_id, "run_id": run_id, "permit_id": permit_id,
                "holder_sub": permit["holder_sub"], "files": [], "attestations": attestations,
                "checks": [], "created_at": utcnow()})
        run_store.update_run(cur, run_id, utcnow(), state="completed", output_id=output_id,
                             epsilon_per_node=epsilon_per_node)


def test_activity_report_from_the_portal_tables(api, keycloak):
    s1, s2 = bearer(keycloak.token("steward1")), bearer(keycloak.token("steward2"))
    api.post("/v1/consents/import", headers=s1, json={"consents": [
        {"subject": pseudonym(f"rep{i}"), "purposes": ["scientific_research"]}
        for i in range(12)]})
    api.post("/v1/consents", headers=s2, json={"subject": pseudonym("repb"),
                                                "purposes": ["statistics"]})
    ai_permit = _approved_permit(api, keycloak)  # purpose ai_training, covered by research
    stats_permit = _approved_permit(api, keycloak, purpose="statistics",
                                    title="Hospital statistics")
    # what the runs service stores when runs end: ε per node on the run, and the nodes'
    # attestations on the output it left in the airlock
    _run(api, "run_1", ai_permit, {"hospital-a": 1.5, "hospital-b": 2.0})
    _run(api, "run_2", ai_permit, {"hospital-a": 0.4}, attestations=[
        {"node_id": "hospital-a", "dataset_id": "pneumonia", "epsilon": 0.5, "delta": 1e-6}])
    _run(api, "run_9", stats_permit, {"hospital-a": 9.0})

    year = datetime.now(UTC).year
    report = api.get("/v1/consents/report", params={"year": year}, headers=s1)
    assert report.status_code == 200, report.text
    rep = report.json()
    assert rep["organisation"] == "org-a" and rep["year"] == year
    assert [p["permit_id"] for p in rep["permits"]] == [ai_permit]
    p = rep["permits"][0]
    assert p["purpose"] == "ai_training" and p["holder"] == "alice"
    assert p["holder_organisation"] == "KU Leuven"
    assert "scientific_research" in p["covered_by_consented_purposes"]
    assert p["consenting_subjects"] == 12 and p["epsilon_cap"] == 8.0
    assert p["epsilon_spent"] == {"hospital-a/pneumonia": 2.0, "hospital-b/pneumonia": 2.0}
    assert [(r["run_id"], r["state"]) for r in p["runs"]] == [
        ("run_1", "completed"), ("run_2", "completed")]
    assert p["runs"][1]["epsilon"] == [{"node_id": "hospital-a", "dataset_id": "pneumonia",
                                        "epsilon": 0.5, "delta": 1e-6}]
    assert rep["consents"]["at_end_of_period"]["active:scientific_research"] == 12
    assert rep["consents"]["changes"] == {"record": 12}
    assert any("differentially private" in t for t in rep["techniques"])
    assert rep["audit_anchor"]["seq"] > 0

    org_b = api.get("/v1/consents/report", params={"year": year}, headers=s2).json()
    assert [p["permit_id"] for p in org_b["permits"]] == [stats_permit]

    auditor = bearer(keycloak.token("auditor1"))
    assert api.get("/v1/consents/report", params={"year": year, "organisation": "org-a"},
                   headers=auditor).json()["permits"][0]["permit_id"] == ai_permit
    assert api.get("/v1/consents/report", headers=auditor).status_code == 422
    assert api.get("/v1/consents/report", params={"organisation": "org-a"},
                   headers=s2).status_code == 403
    assert api.get("/v1/consents/report", headers=bearer(keycloak.token("alice"))
                   ).status_code == 403
    last_year = api.get("/v1/consents/report", params={"year": year - 1}, headers=s1).json()
    assert last_year["permits"] == [] and last_year["consents"]["changes"] == {}


def test_activity_report_ends_a_revoked_permit_and_counts_its_runs(api, keycloak):
    s1 = bearer(keycloak.token("steward1"))
    api.post("/v1/consents", headers=s1, json={"subject": pseudonym("revoked"),
                                                "purposes": ["ai_training"]})
    permit = _approved_permit(api, keycloak)
    _run(api, "run_r", permit, {"hospital-a": 0.75, "hospital-b": 1.25})
    revoked = api.post(f"/v1/permits/{permit}/revoke", json={"reason": "ethics lapsed"},
                       headers=bearer(keycloak.token("rev1")))
    assert revoked.status_code == 200, revoked.text

    year = datetime.now(UTC).year
    seq, head = api.app.state.portal.audit.head()
    rep = api.get("/v1/consents/report", params={"year": year}, headers=s1).json()
    p = next(p for p in rep["permits"] if p["permit_id"] == permit)
    assert p["ended"]["how"] == "revoked"
    assert datetime.fromisoformat(p["ended"]["at"]) == \
        datetime.fromisoformat(revoked.json()["revoked_at"])
    assert [r["run_id"] for r in p["runs"]] == ["run_r"] and p["runs"][0]["ended_at"]
    assert p["epsilon_spent"] == {"hospital-a/pneumonia": 0.75, "hospital-b/pneumonia": 1.25}
    # the anchor is the head of the chain when the report was made (reading adds nothing)
    assert rep["audit_anchor"] == {"seq": seq, "hash": head}
