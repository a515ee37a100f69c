"""Airlock: automated checks, two distinct checkers, holder-only download after release."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.portal import approved_permit, bearer
from tre.portal.services import airlock

pytestmark = pytest.mark.integration

GOOD_METRICS = {"rounds": [{"round": 1, "auc": 0.91, "examples": 1200},
                           {"round": 2, "auc": 0.93, "examples": 1200}],
                "test": {"auc": 0.93, "accuracy": 0.86, "examples": 624}}


def attest(node="hospital-a", eps=3.2, mia=0.02):
    return {"node_id": node, "dataset_id": "pneumonia", "epsilon": eps, "delta": 1e-5,
            "accountant": "rdp", "noise_multiplier": 1.1, "mia_advantage": mia}


@pytest.fixture
def permit(api, keycloak):
    return approved_permit(api, keycloak)


def submit(api, permit, metrics=GOOD_METRICS, attestations=None):
    files = {"model.pt": b"\x80weights", "metrics.json": json.dumps(metrics).encode()}
    return airlock.submit_output(
        api.app.state.portal, run_id="run_test", permit=permit, files=files,
        attestations=attestations if attestations is not None
        else [attest(), attest("hospital-b", 2.9)])


def check(api, keycloak, oid, user, decision="approve"):
    return api.post(f"/v1/outputs/{oid}/reviews", headers=bearer(keycloak.token(user)),
                    json={"decision": decision, "rationale": f"{user} checked the output"})


def test_two_checkers_release_and_only_the_holder_downloads(api, keycloak, permit):
    out = submit(api, permit)
    assert out["status"] == "pending" and all(c["passed"] for c in out["checks"]), out["checks"]
    alice = bearer(keycloak.token("alice"))
    pending = api.get(f"/v1/outputs/{out['id']}/files/model.pt", headers=alice)
    assert pending.status_code == 409 and "only released" in pending.json()["detail"]

    first = check(api, keycloak, out["id"], "chk1")
    assert first.json()["status"] == "approved_once"
    twice = check(api, keycloak, out["id"], "chk1")
    assert twice.status_code == 409 and "already checked" in twice.json()["detail"]
    assert api.get(f"/v1/outputs/{out['id']}/files/model.pt", headers=alice).status_code == 409
    assert check(api, keycloak, out["id"], "chk2").json()["status"] == "released"

    got = api.get(f"/v1/outputs/{out['id']}/files/model.pt", headers=alice)
    assert got.status_code == 200 and got.content == b"\x80weights"
    other = api.get(f"/v1/outputs/{out['id']}/files/model.pt",
                    headers=bearer(keycloak.token("bob")))
    assert other.status_code == 403
    log = api.get("/v1/audit", params={"limit": 1000},
                  headers=bearer(keycloak.token("auditor1"))).json()["entries"]
    downloads = [e for e in log if e["action"] == "output.download"]
    assert len(downloads) == 1 and downloads[0]["actor"] == "alice"


def test_researcher_cannot_check_and_holder_who_is_checker_cannot_either(api, keycloak, permit):
    out = submit(api, permit)
    assert check(api, keycloak, out["id"], "alice").status_code == 403
    keycloak.ensure_user("olga", roles=["researcher", "output_checker"])
    own = submit(api, approved_permit(api, keycloak, "olga"))
    resp = check(api, keycloak, own["id"], "olga")
    assert resp.status_code == 403 and "own output" in resp.json()["detail"]


def test_small_count_is_flagged_and_blocks_release(api, keycloak, permit):
    metrics = {"test": {"auc": 0.9, "examples": 624},
               "per_label": [{"label": "pneumonia", "count": 4}]}
    out = submit(api, permit, metrics=metrics)
    flagged = {c["check"]: c for c in out["checks"]}["small_counts"]
    assert not flagged["passed"] and "count = 4" in flagged["detail"]
    resp = check(api, keycloak, out["id"], "chk1")
    assert resp.status_code == 409 and "small_counts" in resp.json()["detail"]
    assert check(api, keycloak, out["id"], "chk1", "reject").json()["status"] == "rejected"


def test_a_small_count_under_any_name_or_in_a_table_is_read_as_a_count(api, permit):
    metrics = {"rounds": [{"round": 1, "auc": 0.91}, {"round": 2, "auc": 0.93}],
               "subgroups": {"female_over_80": {"positives": 3, "rate": 0.4}}}
    files = {"metrics.json": json.dumps(metrics).encode(),
             "table.csv": b"age_band,patients,mean_age\n1,120,41.5\n2,7,83.2\n"}
    out = airlock.submit_output(api.app.state.portal, run_id="run_test", permit=permit,
                                files=files, attestations=[attest()])
    flagged = {c["check"]: c for c in out["checks"]}["small_counts"]
    assert not flagged["passed"]
    assert "metrics.json.subgroups.female_over_80.positives = 3" in flagged["detail"]
    assert "table.csv row 2 patients = 7" in flagged["detail"]
    # the round numbers and the age-band column are positions, the rates statistics
    assert "round" not in flagged["detail"] and "age_band" not in flagged["detail"]
    assert "statistic" in flagged["detail"] and "ordinal" in flagged["detail"]


def test_dp_attestation_missing_or_over_cap_and_mia_are_flagged(api, permit):
    over = submit(api, permit, attestations=[attest(eps=50.0)])
    checks = {c["check"]: c for c in over["checks"]}
    assert not checks["dp_attestation"]["passed"] and "above the cap" in \
        checks["dp_attestation"]["detail"]
    none = submit(api, permit, attestations=[])
    assert not {c["check"]: c for c in none["checks"]}["dp_attestation"]["passed"]
    leaky = submit(api, permit, attestations=[attest(mia=0.4)])
    assert not {c["check"]: c for c in leaky["checks"]}["membership_inference"]["passed"]


def test_per_record_arrays_are_flagged(api, permit):
    out = submit(api, permit, metrics={"scores": [0.1] * 500})
    agg = {c["check"]: c for c in out["checks"]}["aggregates_only"]
    assert not agg["passed"] and "per-record" in agg["detail"]


def test_bad_file_name_stores_nothing(api, permit):
    portal = api.app.state.portal
    before = portal.audit.count()
    with pytest.raises(airlock.Invalid):
        airlock.submit_output(portal, run_id="r", permit=permit, files={"../x": b"1"},
                              attestations=[attest()])
    assert portal.audit.count() == before


def test_mia_blocks_on_the_interval_not_the_point_estimate(api, permit):
    noisy = attest(mia=0.15) | {"mia_ci_low": 0.06, "mia_ci_high": 0.21,
                                "mia_chance_advantage": 0.12, "mia_p_value": 0.2}
    out = submit(api, permit, attestations=[noisy])
    check = {c["check"]: c for c in out["checks"]}["membership_inference"]
    assert check["passed"] and "95 % CI 0.060–0.210" in check["detail"], check
    leaky = attest(mia=0.3) | {"mia_ci_low": 0.22, "mia_ci_high": 0.37,
                               "mia_chance_advantage": 0.12, "mia_p_value": 0.002}
    out = submit(api, permit, attestations=[leaky])
    check = {c["check"]: c for c in out["checks"]}["membership_inference"]
    assert not check["passed"] and "TOO HIGH" in check["detail"]
