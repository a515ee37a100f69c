"""Consent receipts (JSON and printable HTML) and the DGA Art. 20 activity report."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from tests.consent.conftest import pseudonym
from tests.fixtures.portal import bearer, request_body
from tre.core.audit import canonical_json

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


def test_activity_report_from_the_audit_trail(api, keycloak):
    s1, s2 = bearer(keycloak.token("steward1")), bearer(keycloak.token("steward2"))
    api.post("/v1/consents/import", headers=s1, json={"consents": [
        {"subject": pseudonym(f"rep{i}"), "purposes": ["scientific_research"]}
        for i in range(12)]})
    api.post("/v1/consents", headers=s2, json={"subject": pseudonym("repb"),
                                                "purposes": ["statistics"]})
    ai_permit = _approved_permit(api, keycloak)  # purpose ai_training, covered by research
    stats_permit = _approved_permit(api, keycloak, purpose="statistics",
                                    title="Hospital statistics")
    # what runs leave in the audit log: the runs service's run.start / run.complete,
    # and a flat per-node figure
    audit = api.app.state.portal.audit
    audit.record(actor="alice", action="run.start", object_type="run", object_id="run_1",
                 details={"permit_id": ai_permit, "params": {"rounds": 2}})
    audit.record(actor="system", action="run.complete", object_type="run", object_id="run_1",
                 details={"state": "completed",
                          "epsilon_per_node": {"hospital-a": 1.5, "hospital-b": 2.0}})
    audit.record(actor="system", action="run.finish", object_type="run", object_id="run_2",
                 details={"run_id": "run_2", "permit_id": ai_permit, "node_id": "hospital-a",
                          "dataset_id": "pneumonia", "epsilon": 0.5})
    audit.record(actor="system", action="run.complete", object_type="run", object_id="run_9",
                 details={"state": "completed", "epsilon_per_node": {"hospital-a": 9.0}})

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
    assert [(r["run_id"], r["action"]) for r in p["runs"]] == [
        ("run_1", "run.start"), ("run_1", "run.complete"), ("run_2", "run.finish")]
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
