"""FHIR R4 Consent import and export: round trip, validation paths, all-or-nothing."""

from __future__ import annotations

import copy

import pytest
from fhir.resources.R4B.bundle import Bundle

from tests.consent.conftest import pseudonym
from tests.fixtures.portal import bearer
from tre.portal import consent_fhir
from tre.portal.consent_fhir import FhirError, parse

FHIR = {"Content-Type": "application/fhir+json"}


def consent_resource(subject: str, *, purposes=("scientific_research",), type_="permit",
                     status="active", period=None, org="org-a") -> dict:
    provision = {"type": type_, "purpose": [{"system": consent_fhir.PURPOSE_SYSTEM, "code": p}
                                            for p in purposes]}
    if period:
        provision["period"] = period
    return {
        "resourceType": "Consent",
        "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "research"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "57016-8"}]}],
        "patient": {"identifier": {"system": consent_fhir.PSEUDONYM_SYSTEM, "value": subject}},
        "organization": [{"identifier": {"value": org}}],
        "policyRule": {"coding": [{"code": "OPTIN"}]},
        "provision": provision,
    }


def bundle(*resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": r} for r in resources]}


# -- unit: the mapping and its error paths ------------------------------------------------
@pytest.mark.unit
def test_parse_maps_status_type_purposes_and_period():
    parsed = parse(bundle(
        consent_resource(pseudonym("p1"), purposes=["ai_training", "statistics"],
                         period={"start": "2026-01-01", "end": "2027-06-30T12:00:00+02:00"}),
        consent_resource(pseudonym("p2"), type_="deny"),
        consent_resource(pseudonym("p3"), status="inactive"),
        {**consent_resource(pseudonym("p4")),
         "provision": {"type": "permit", "purpose": [
             {"system": consent_fhir.V3_ACT_REASON, "code": "HRESCH"}]}},
    ))
    assert [p.status.value for p in parsed] == ["active", "withdrawn", "withdrawn", "active"]
    assert [str(x) for x in parsed[0].purposes] == ["ai_training", "statistics"]
    assert (str(parsed[0].valid_from), str(parsed[0].valid_to)) == ("2026-01-01", "2027-06-30")
    assert [str(x) for x in parsed[3].purposes] == ["scientific_research"]
    assert parsed[0].organisation == "org-a" and parsed[1].path == "Bundle.entry[1].resource"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda b: b["entry"][2]["resource"]["provision"]["purpose"][0].update(code="marketing"),
         "Bundle.entry[2].resource.provision.purpose[0]"),
        (lambda b: b["entry"][1]["resource"]["provision"].update(type="perhaps"),
         "Bundle.entry[1].resource.provision.type"),
        (lambda b: b["entry"][0]["resource"]["provision"].update(period={"start": "2026-13-40"}),
         "Bundle.entry[0].resource.provision.period.start"),
        (lambda b: b["entry"][2]["resource"]["provision"].update(
            period={"start": "2027-01-01", "end": "2026-01-01"}),
         "Bundle.entry[2].resource.provision.period"),
        (lambda b: b["entry"][1]["resource"].update(status="draft"),
         "Bundle.entry[1].resource.status"),
        (lambda b: b["entry"][1]["resource"]["patient"]["identifier"].update(
            system="urn:oid:hospital-mrn"), "Bundle.entry[1].resource.patient.identifier.system"),
        (lambda b: b["entry"][2].update(resource={"resourceType": "Patient"}),
         "Bundle.entry[2].resource.resourceType"),
        (lambda b: b["entry"][0]["resource"]["provision"].update(purpose="research"),
         "Bundle.entry[0].resource.provision.purpose"),
        (lambda b: b["entry"][1]["resource"].update(unknownField=1),
         "Bundle.entry[1].resource.unknownField"),
        (lambda b: b["entry"][2]["resource"]["provision"].pop("purpose"),
         "Bundle.entry[2].resource.provision.purpose"),
        (lambda b: b.pop("type"), "Bundle.type"),
    ],
)
def test_malformed_bundles_name_the_fhir_path(mutate, path):
    good = bundle(*(consent_resource(pseudonym(f"m{i}")) for i in range(3)))
    parse(good)
    bad = copy.deepcopy(good)
    mutate(bad)
    with pytest.raises(FhirError) as err:
        parse(bad)
    assert path in [p.path for p in err.value.problems], err.value.problems
    assert path in str(err.value)


@pytest.mark.unit
def test_single_resource_paths_start_at_consent():
    bad = consent_resource(pseudonym("single"))
    bad["provision"]["purpose"][0]["code"] = "nope"
    with pytest.raises(FhirError, match=r"Consent\.provision\.purpose\[0\]"):
        parse(bad)
    with pytest.raises(FhirError, match="resourceType"):
        parse({"resourceType": "Observation"})
    with pytest.raises(FhirError, match="JSON object"):
        parse(["not", "a", "resource"])


# -- integration: through the API -----------------------------------------------------------

def _state(api):
    portal = api.app.state.portal
    with portal.db.reader() as cur:
        rows = cur.execute("SELECT consent_id, organisation, subject, purposes, status,"
                           " valid_from, valid_to FROM consent ORDER BY consent_id").fetchall()
        versions = cur.execute("SELECT count(*) FROM consent_version").fetchall()[0][0]
    return rows, versions, portal.audit.count()


@pytest.mark.integration
def test_fhir_round_trip_gives_the_same_registry(api, make_portal, keycloak, tmp_path):
    s1 = bearer(keycloak.token("steward1"))
    for i, purposes in enumerate([["ai_training"], ["statistics", "education"],
                                  ["scientific_research", "public_interest_health"]]):
        api.post("/v1/consents", headers=s1, json={
            "subject": pseudonym(f"rt{i}"), "purposes": purposes,
            "valid_from": "2026-01-01" if i else None,
            "valid_to": "2028-12-31" if i == 2 else None})
    cid = api.get("/v1/consents", headers=s1).json()["items"][0]["id"]
    api.post(f"/v1/consents/{cid}/withdraw", headers=s1)

    exported = api.get("/v1/consents/fhir", headers=s1)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("application/fhir+json")
    doc = exported.json()
    Bundle.model_validate(doc)  # a valid R4 bundle
    assert doc["total"] == 3
    assert {e["resource"]["status"] for e in doc["entry"]} == {"active", "inactive"}

    other = make_portal(tmp_path / "other-portal")
    resp = other.post("/v1/consents/fhir", headers=s1 | FHIR, json=doc)
    assert resp.status_code == 200, resp.text
    assert resp.json()["created"] == 3
    assert _state(other)[0] == _state(api)[0]

    def strip(b):
        for e in b["entry"]:
            e["resource"].pop("meta")
            e["resource"].pop("dateTime")
        return b

    again = other.get("/v1/consents/fhir", headers=s1).json()
    assert strip(again) == strip(copy.deepcopy(doc))
    # importing the same export again changes nothing
    same = other.post("/v1/consents/fhir", headers=s1 | FHIR, json=doc).json()
    assert (same["created"], same["updated"], same["unchanged"]) == (0, 0, 3)
    single = other.get(f"/v1/consents/{cid}/fhir", headers=s1).json()
    assert single["id"] == cid and single["provision"]["type"] == "deny"


@pytest.mark.integration
def test_a_bundle_with_one_bad_entry_is_rejected_whole(api, keycloak):
    s1 = bearer(keycloak.token("steward1"))
    before = _state(api)
    doc = bundle(*(consent_resource(pseudonym(f"w{i}")) for i in range(4)))
    doc["entry"][2]["resource"]["provision"]["purpose"][0]["code"] = "marketing"
    resp = api.post("/v1/consents/fhir", headers=s1 | FHIR, json=doc)
    assert resp.status_code == 422
    assert "Bundle.entry[2].resource.provision.purpose[0]" in resp.json()["detail"]
    assert "nothing was imported" in resp.json()["detail"]
    assert _state(api) == before

    doc = bundle(consent_resource(pseudonym("ok1")), consent_resource(pseudonym("ok1")))
    resp = api.post("/v1/consents/fhir", headers=s1 | FHIR, json=doc)
    assert resp.status_code == 422 and "Bundle.entry[1].resource" in resp.json()["detail"]
    assert _state(api) == before

    doc = bundle(consent_resource(pseudonym("ok2")), consent_resource(pseudonym("ok3"),
                                                                      org="org-b"))
    resp = api.post("/v1/consents/fhir", headers=s1 | FHIR, json=doc)
    assert resp.status_code == 403 and "Bundle.entry[1].resource" in resp.json()["detail"]
    assert _state(api) == before

    resp = api.post("/v1/consents/fhir", headers=s1 | FHIR, content=b"{not json")
    assert resp.status_code == 422
    assert _state(api) == before


@pytest.mark.integration
def test_single_consent_import_and_id_clash(api, keycloak):
    s1 = bearer(keycloak.token("steward1"))
    resp = api.post("/v1/consents/fhir", headers=s1 | FHIR,
                    json=consent_resource(pseudonym("one"), purposes=["education"]))
    assert resp.status_code == 200 and resp.json()["created"] == 1
    cid = resp.json()["consent_ids"][0]
    clash = consent_resource(pseudonym("two"))
    clash["id"] = cid
    before = _state(api)
    resp = api.post("/v1/consents/fhir", headers=s1 | FHIR, json=clash)
    assert resp.status_code == 422 and "Consent.id" in resp.json()["detail"]
    assert _state(api) == before
