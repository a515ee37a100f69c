"""Consent registry: who may write what, versions and history, bulk import, audit."""

from __future__ import annotations

import pytest

from tests.consent.conftest import pseudonym
from tests.fixtures.portal import bearer

pytestmark = pytest.mark.integration


def record(api, headers, subject, purposes=("scientific_research",), **extra):
    return api.post("/v1/consents", headers=headers,
                    json={"subject": subject, "purposes": list(purposes), **extra})


def registry_state(api) -> tuple:
    portal = api.app.state.portal
    with portal.db.reader() as cur:
        current = cur.execute("SELECT * FROM consent ORDER BY consent_id").fetchall()
        versions = cur.execute("SELECT count(*) FROM consent_version").fetchall()[0][0]
    return current, versions, portal.audit.count()


def test_record_update_withdraw_keeps_history(api, keycloak, steward):
    s1 = steward("steward1")
    resp = record(api, s1, pseudonym("alice"), ["ai_training", "statistics"],
                  valid_from="2026-01-01")
    assert resp.status_code == 201, resp.text
    c = resp.json()
    assert c["organisation"] == "org-a" and c["status"] == "active" and c["version"] == 1
    assert c["purposes"] == ["ai_training", "statistics"]
    cid = c["id"]

    upd = api.patch(f"/v1/consents/{cid}", headers=s1,
                    json={"purposes": ["scientific_research"], "valid_to": "2030-12-31"})
    assert upd.status_code == 200, upd.text
    assert upd.json()["version"] == 2 and upd.json()["valid_to"] == "2030-12-31"
    assert upd.json()["registry_version"] > c["registry_version"]

    wd = api.post(f"/v1/consents/{cid}/withdraw", headers=s1, json={"reason": "subject asked"})
    assert wd.status_code == 200, wd.text
    body = wd.json()
    assert body["status"] == "withdrawn" and body["version"] == 3
    assert [h["change"] for h in body["history"]] == ["record", "update", "withdraw"]
    assert body["history"][0]["purposes"] == ["ai_training", "statistics"]
    assert body["history"][2]["note"] == "subject asked"

    again = api.post(f"/v1/consents/{cid}/withdraw", headers=s1)
    assert again.status_code == 409 and "already withdrawn" in again.json()["detail"]
    back = api.patch(f"/v1/consents/{cid}", headers=s1, json={"status": "active"})
    assert back.json()["status"] == "active" and back.json()["history"][-1]["change"] == "reconsent"

    got = api.get(f"/v1/consents/{cid}", headers=s1).json()
    assert len(got["history"]) == 4  # nothing was ever deleted
    auditor = bearer(keycloak.token("auditor1"))
    entries = api.get("/v1/audit", params={"limit": 1000}, headers=auditor).json()["entries"]
    mine = [e for e in entries if e["object_id"] == cid]
    assert [e["action"] for e in mine] == ["consent.record", "consent.update",
                                           "consent.withdraw", "consent.reconsent"]
    assert mine[2]["details"]["reason"] == "subject asked"
    assert [h["audit_seq"] for h in got["history"]] == [e["seq"] for e in mine]
    assert api.get("/v1/audit/verify", headers=auditor).json()["ok"]


def test_a_steward_cannot_alter_another_organisations_consents(api, keycloak, steward):
    s1, s2 = steward("steward1"), steward("steward2")
    cid = record(api, s1, pseudonym("bob")).json()["id"]
    before = registry_state(api)

    # changing another organisation's consent answers as reading it does: not found
    read = api.get(f"/v1/consents/{cid}", headers=s2)
    for resp in (
        api.patch(f"/v1/consents/{cid}", headers=s2, json={"purposes": ["statistics"]}),
        api.post(f"/v1/consents/{cid}/withdraw", headers=s2, json={"reason": "not mine"}),
    ):
        assert resp.status_code == read.status_code == 404 and resp.json() == read.json()
    attempts = [
        record(api, s2, pseudonym("carol"), organisation="org-a"),
        api.post("/v1/consents/import", headers=s2, json={"consents": [
            {"subject": pseudonym("dave"), "purposes": ["statistics"], "organisation": "org-a"}]}),
    ]
    for resp in attempts:
        assert resp.status_code == 403, resp.text
        assert "org-a" in resp.json()["detail"]
    assert registry_state(api) == before

    # reads are scoped too: org-b neither sees nor lists org-a's consents
    assert api.get(f"/v1/consents/{cid}", headers=s2).status_code == 404
    assert api.get("/v1/consents", headers=s2).json()["total"] == 0
    assert api.get("/v1/consents", params={"organisation": "org-a"},
                   headers=s2).status_code == 403
    assert api.get("/v1/consents", headers=s1).json()["total"] == 1
    everyone = api.get("/v1/consents", headers=bearer(keycloak.token("auditor1"))).json()
    assert everyone["total"] == 1


@pytest.mark.parametrize("who", ["alice", "rev1", "auditor1", "admin1", "node"])
def test_researchers_nodes_and_others_cannot_write(api, keycloak, steward, who):
    cid = record(api, steward("steward1"), pseudonym("erin")).json()["id"]
    before = registry_state(api)
    headers = (bearer(keycloak.client_token("hospital-a")) if who == "node"
               else bearer(keycloak.token(who)))
    attempts = [
        record(api, headers, pseudonym("frank")),
        api.patch(f"/v1/consents/{cid}", headers=headers, json={"purposes": ["statistics"]}),
        api.post(f"/v1/consents/{cid}/withdraw", headers=headers),
        api.post("/v1/consents/import", headers=headers,
                 json={"consents": [{"subject": pseudonym("gina"), "purposes": ["statistics"]}]}),
        api.post("/v1/consents/fhir", headers=headers, json={"resourceType": "Bundle"}),
    ]
    for resp in attempts:
        assert resp.status_code == 403, (who, resp.text)
        assert "consent.write" in resp.json()["detail"]
    assert registry_state(api) == before


def test_only_nodes_pull_snapshots_and_researchers_read_nothing(api, keycloak, steward):
    assert api.get("/v1/consents/snapshot", headers=steward("steward1")).status_code == 403
    assert api.get("/v1/consents/snapshot",
                   headers=bearer(keycloak.token("alice"))).status_code == 403
    assert api.get("/v1/consents", headers=bearer(keycloak.token("alice"))).status_code == 403
    assert api.get("/v1/consents",
                   headers=bearer(keycloak.client_token("hospital-a"))).status_code == 403
    assert api.get("/v1/consents/snapshot").status_code == 401


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"subject": "short", "purposes": ["statistics"]}, "subject"),
        ({"subject": pseudonym("x"), "purposes": ["marketing"]}, "purposes"),
        ({"subject": pseudonym("x"), "purposes": []}, "purposes"),
        ({"subject": pseudonym("x"), "purposes": ["statistics"], "valid_from": "2027-01-01",
          "valid_to": "2026-01-01"}, "valid_from"),
        ({"subject": pseudonym("x"), "purposes": ["statistics"], "status": "maybe"}, "status"),
        ({"subject": pseudonym("x"), "purposes": ["statistics"], "extra": 1}, "extra"),
    ],
)
def test_bad_input_is_named_and_stores_nothing(api, steward, body, named):
    before = registry_state(api)
    resp = api.post("/v1/consents", headers=steward(), json=body)
    assert resp.status_code == 422 and named in resp.text
    assert registry_state(api) == before


def test_duplicate_subject_and_empty_patch_are_refused(api, steward):
    s1 = steward()
    cid = record(api, s1, pseudonym("hank")).json()["id"]
    dup = record(api, s1, pseudonym("hank"))
    assert dup.status_code == 409 and cid in dup.json()["detail"]
    same = api.patch(f"/v1/consents/{cid}", headers=s1, json={"purposes": ["scientific_research"]})
    assert same.status_code == 422 and "changes nothing" in same.json()["detail"]
    bad = api.patch(f"/v1/consents/{cid}", headers=s1, json={"valid_from": "2030-01-01",
                                                              "valid_to": "2029-01-01"})
    assert bad.status_code == 422
    assert api.patch("/v1/consents/cns-0000000000000000", headers=s1,
                     json={"purposes": ["statistics"]}).status_code == 404
    # the same subject may hold a consent with another organisation
    assert record(api, steward("steward2"), pseudonym("hank")).status_code == 201


def test_bulk_import_is_all_or_nothing_and_versions_changes(api, keycloak, steward):
    s1 = steward()
    rows = [{"subject": pseudonym(f"bulk{i}"), "purposes": ["statistics", "education"]}
            for i in range(50)]
    first = api.post("/v1/consents/import", headers=s1, json={"consents": rows})
    assert first.status_code == 200, first.text
    res = first.json()
    assert (res["created"], res["updated"], res["unchanged"]) == (50, 0, 0)
    assert len(res["consent_ids"]) == 50

    before = registry_state(api)
    dup = rows[:3] + [rows[1]]
    resp = api.post("/v1/consents/import", headers=s1, json={"consents": dup})
    assert resp.status_code == 422 and "consents[3]" in resp.text and "twice" in resp.text
    assert registry_state(api) == before

    rows[0] = {**rows[0], "status": "withdrawn"}
    rows[1] = {**rows[1], "purposes": ["statistics"]}
    again = api.post("/v1/consents/import", headers=s1, json={"consents": rows}).json()
    assert (again["created"], again["updated"], again["withdrawn"], again["unchanged"]) == \
        (0, 2, 1, 48)
    assert again["consent_ids"] == res["consent_ids"]
    assert again["registry_version"] == res["registry_version"] + 2
    hist = api.get(f"/v1/consents/{res['consent_ids'][0]}", headers=s1).json()["history"]
    assert [h["change"] for h in hist] == ["record", "withdraw"]
    assert [h["source"] for h in hist] == ["bulk", "bulk"]

    entries = api.get("/v1/audit", params={"limit": 1000},
                      headers=bearer(keycloak.token("auditor1"))).json()["entries"]
    imports = [e for e in entries if e["action"] == "consent.import"]
    assert [e["details"]["created"] for e in imports] == [50, 0]
    assert imports[1]["details"]["registry_versions"] == [res["registry_version"] + 1,
                                                          res["registry_version"] + 2]
    assert len(imports[1]["details"]["digest"]) == 64
