"""Access request → review → permit, with quorum, self-review refusal, revocation,
transparency, bad input and restarts, against the real Keycloak and a real DuckDB file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from access_control.permits import PermitError, verify_permit
from tests.fixtures.portal import APP_HASH, APP_ID, bearer, request_body
from tre.portal.services import access as access_service

pytestmark = pytest.mark.integration


def submitted(api, keycloak, user="alice", **over) -> dict:
    resp = api.post("/v1/requests", json=request_body(**over), headers=bearer(keycloak.token(user)))
    assert resp.status_code == 201, resp.text
    rid = resp.json()["id"]
    resp = api.post(f"/v1/requests/{rid}/submit", headers=bearer(keycloak.token(user)))
    assert resp.status_code == 200, resp.text
    return resp.json()


def review(api, keycloak, rid, user, decision="approve", **extra):
    body = {"decision": decision, "rationale": f"{user}: proportionate and well justified"}
    return api.post(f"/v1/requests/{rid}/reviews", json=body | extra,
                    headers=bearer(keycloak.token(user)))


def test_request_approved_yields_verifiable_permit(api, keycloak):
    req = submitted(api, keycloak)
    assert req["status"] == "submitted" and req["applicant_username"] == "alice"
    resp = review(api, keycloak, req["id"], "rev1", conditions={"epsilon": 4.0})
    assert resp.status_code == 200, resp.text
    decided = resp.json()
    assert decided["status"] == "approved" and decided["permit_id"]

    permit = api.get(f"/v1/permits/{decided['permit_id']}",
                     headers=bearer(keycloak.token("alice"))).json()
    jwks = api.get("/v1/permit-keys").json()
    claims = verify_permit(permit["token"], jwks)
    assert claims.app_hash == APP_HASH and claims.app_id == APP_ID
    assert {d.node_id for d in claims.datasets} == {"hospital-a", "hospital-b"}
    assert all(d.epsilon_cap == 4.0 for d in claims.datasets), "strictest condition applies"
    assert claims.sub == decided["applicant_sub"]

    # another researcher cannot see alice's permit or request
    assert api.get(f"/v1/permits/{claims.permit_id}",
                   headers=bearer(keycloak.token("bob"))).status_code == 404
    assert api.get(f"/v1/requests/{req['id']}",
                   headers=bearer(keycloak.token("bob"))).status_code == 404

    # revocation reaches the list nodes pull, and the transparency register
    resp = api.post(f"/v1/permits/{claims.permit_id}/revoke", json={"reason": "ethics lapsed"},
                    headers=bearer(keycloak.token("rev2")))
    assert resp.status_code == 200 and resp.json()["status"] == "revoked"
    revoked = api.get("/v1/permits/revoked",
                      headers=bearer(keycloak.client_token("hospital-a"))).json()["revoked"]
    assert claims.permit_id in revoked
    with pytest.raises(PermitError, match="revoked"):
        verify_permit(permit["token"], jwks, revoked=revoked)
    public = api.get("/v1/transparency").json()
    entry = next(p for p in public["permits"] if p["permit_id"] == claims.permit_id)
    assert entry["status"] == "revoked" and entry["purpose"] == "ai_training"
    assert public["median_days_to_decision"] is not None


def test_refusal_is_public_with_its_justification(api, keycloak):
    req = submitted(api, keycloak, title="Re-identify patients")
    resp = review(api, keycloak, req["id"], "rev2", decision="reject")
    assert resp.json()["status"] == "rejected"
    refusals = api.get("/v1/transparency").json()["refusals"]
    entry = next(r for r in refusals if r["request_id"] == req["id"])
    assert entry["justification"] == ["rev2: proportionate and well justified"]
    assert "applicant_sub" not in entry


def test_changing_someone_elses_request_answers_as_a_missing_one(api, keycloak):
    req = submitted(api, keycloak)
    bob = bearer(keycloak.token("bob"))
    read = api.get(f"/v1/requests/{req['id']}", headers=bob)
    for resp in (api.patch(f"/v1/requests/{req['id']}", json={"epsilon": 2.0}, headers=bob),
                 api.post(f"/v1/requests/{req['id']}/withdraw", headers=bob),
                 api.post(f"/v1/requests/{req['id']}/submit", headers=bob)):
        assert resp.status_code == read.status_code == 404 and resp.json() == read.json()
    assert api.get(f"/v1/requests/{req['id']}",
                   headers=bearer(keycloak.token("alice"))).json()["status"] == "submitted"


def test_self_review_is_forbidden(api, keycloak):
    keycloak.ensure_user("rita", roles=["researcher", "reviewer"])
    req = submitted(api, keycloak, user="rita")
    resp = review(api, keycloak, req["id"], "rita")
    assert resp.status_code == 403
    assert "own request" in resp.json()["detail"]
    assert api.get(f"/v1/requests/{req['id']}",
                   headers=bearer(keycloak.token("rita"))).json()["status"] == "submitted"


def test_quorum_of_two_needs_two_distinct_reviewers(make_portal, keycloak, tmp_path):
    api = make_portal(tmp_path / "quorum", review_quorum=2)
    api.post("/v1/apps", headers=bearer(keycloak.token("admin1")),
             json={"app_id": APP_ID, "app_hash": APP_HASH, "description": "x"})
    req = submitted(api, keycloak)
    first = review(api, keycloak, req["id"], "rev1")
    assert first.json()["status"] == "in_review" and first.json()["permit_id"] is None
    again = review(api, keycloak, req["id"], "rev1")
    assert again.status_code == 409 and "already reviewed" in again.json()["detail"]
    second = review(api, keycloak, req["id"], "rev2")
    assert second.json()["status"] == "approved" and second.json()["permit_id"]


def test_changes_requested_then_resubmitted(api, keycloak):
    req = submitted(api, keycloak)
    assert review(api, keycloak, req["id"], "rev1",
                  decision="request_changes").json()["status"] == "changes_requested"
    alice = bearer(keycloak.token("alice"))
    patched = api.patch(f"/v1/requests/{req['id']}", json={"epsilon": 2.0}, headers=alice)
    assert patched.status_code == 200 and patched.json()["epsilon"] == 2.0
    again = api.post(f"/v1/requests/{req['id']}/submit", headers=alice).json()
    assert again["status"] == "submitted" and again["review_round"] == 2
    assert review(api, keycloak, req["id"], "rev1").json()["status"] == "approved"


def test_time_to_decision_counts_from_the_first_submission(api, keycloak, monkeypatch):
    """Sent back for changes after 10 days, resubmitted 5 days later, approved 2 days
    after that: 17 days to a decision, not 2."""
    day = [datetime(2026, 3, 2, 9, 0, tzinfo=UTC)]
    monkeypatch.setattr(access_service, "utcnow", lambda: day[0])
    req = submitted(api, keycloak)
    day[0] += timedelta(days=10)
    review(api, keycloak, req["id"], "rev1", decision="request_changes")
    day[0] += timedelta(days=5)
    alice = bearer(keycloak.token("alice"))
    again = api.post(f"/v1/requests/{req['id']}/submit", headers=alice).json()
    assert again["days_elapsed"] == pytest.approx(15)
    day[0] += timedelta(days=2)
    decided = review(api, keycloak, req["id"], "rev1").json()
    assert decided["days_elapsed"] == pytest.approx(17)
    register = api.get("/v1/transparency").json()
    assert register["median_days_to_decision"] == pytest.approx(17)


def test_withdraw_before_decision_only(api, keycloak):
    alice = bearer(keycloak.token("alice"))
    req = submitted(api, keycloak)
    assert api.post(f"/v1/requests/{req['id']}/withdraw",
                    headers=alice).json()["status"] == "withdrawn"
    assert review(api, keycloak, req["id"], "rev1").status_code == 409
    done = submitted(api, keycloak)
    review(api, keycloak, done["id"], "rev1")
    late = api.post(f"/v1/requests/{done['id']}/withdraw", headers=alice)
    assert late.status_code == 409 and "no longer be withdrawn" in late.json()["detail"]


def _store_state(api) -> tuple:
    portal = api.app.state.portal
    with portal.db.reader() as cur:
        reqs = cur.execute("SELECT id, status, fields FROM access_request ORDER BY id").fetchall()
        perms = cur.execute("SELECT id, status FROM permit ORDER BY id").fetchall()
    return reqs, perms, portal.audit.count()


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [
        ({"title": "x"}, 422, "organisation"),
        (request_body(epsilon="lots"), 422, "epsilon"),
        (request_body(purpose="marketing"), 422, "purpose"),
        (request_body(datasets=[]), 422, "datasets"),
        (request_body(delta=0.5), 422, "delta"),
        (request_body(app_id="unknown-app"), 422, "approved app catalogue"),
        (request_body(surprise="field"), 422, "surprise"),
    ],
)
def test_bad_input_is_named_and_changes_nothing(api, keycloak, body, status, named):
    before = _store_state(api)
    resp = api.post("/v1/requests", json=body, headers=bearer(keycloak.token("alice")))
    assert resp.status_code == status
    assert named in resp.text
    assert _store_state(api) == before


def test_oversized_body_and_invalid_transition_change_nothing(api, keycloak):
    alice = bearer(keycloak.token("alice"))
    req = submitted(api, keycloak)
    before = _store_state(api)
    huge = request_body(research_question="x" * 2_000_000)
    resp = api.post("/v1/requests", json=huge, headers=alice)
    assert resp.status_code == 413 and "limit" in resp.json()["detail"]
    resp = api.post(f"/v1/requests/{req['id']}/submit", headers=alice)
    assert resp.status_code == 409 and "cannot be submitted" in resp.json()["detail"]
    resp = api.patch(f"/v1/requests/{req['id']}", json={"title": "new"}, headers=alice)
    assert resp.status_code == 409
    resp = api.post(f"/v1/requests/{req['id']}/reviews", json={"decision": "approve",
                    "rationale": "short"}, headers=bearer(keycloak.token("rev1")))
    assert resp.status_code == 422 and "rationale" in resp.text
    assert _store_state(api) == before


def test_restart_loses_nothing(make_portal, keycloak, tmp_path):
    state = tmp_path / "restart"
    first = make_portal(state)
    first.post("/v1/apps", headers=bearer(keycloak.token("admin1")),
               json={"app_id": APP_ID, "app_hash": APP_HASH, "description": "x"})
    req = submitted(first, keycloak)
    pid = review(first, keycloak, req["id"], "rev1").json()["permit_id"]
    jwks = first.get("/v1/permit-keys").json()
    first.__exit__(None, None, None)

    second = make_portal(state)
    alice = bearer(keycloak.token("alice"))
    assert second.get(f"/v1/requests/{req['id']}", headers=alice).json()["status"] == "approved"
    token = second.get(f"/v1/permits/{pid}", headers=alice).json()["token"]
    assert second.get("/v1/permit-keys").json() == jwks
    assert verify_permit(token, jwks).permit_id == pid
    verdict = second.get("/v1/audit/verify", headers=bearer(keycloak.token("auditor1"))).json()
    assert verdict["ok"] and verdict["rows"] >= 5


@pytest.mark.parametrize("attack", ["edit", "delete", "insert", "reorder"])
def test_audit_tampering_is_detected_through_the_api(api, keycloak, attack):
    submitted(api, keycloak)
    submitted(api, keycloak)
    auditor = bearer(keycloak.token("auditor1"))
    assert api.get("/v1/audit/verify", headers=auditor).json()["ok"]
    db = api.app.state.portal.db
    with db.transaction() as cur:
        if attack == "edit":
            cur.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3")
        elif attack == "delete":
            cur.execute("DELETE FROM audit_log WHERE seq = 3")
        elif attack == "insert":
            cur.execute("INSERT INTO audit_log SELECT * FROM audit_log WHERE seq = 3")
        else:
            cur.execute("UPDATE audit_log SET seq = CASE seq WHEN 3 THEN 4 ELSE 3 END "
                        "WHERE seq IN (3, 4)")
    verdict = api.get("/v1/audit/verify", headers=auditor).json()
    assert not verdict["ok"]
    expected = 4 if attack == "delete" else 3
    assert verdict["first_bad_seq"] in (expected, 4)
    assert f"row {verdict['first_bad_seq']}" in verdict["problem"]


def test_audit_is_paged_for_auditors(api, keycloak):
    for _ in range(3):
        submitted(api, keycloak)
    auditor = bearer(keycloak.token("auditor1"))
    page = api.get("/v1/audit", params={"limit": 2}, headers=auditor).json()
    assert len(page["entries"]) == 2 and page["next_after"] == 2
    rest = api.get("/v1/audit", params={"after": 2, "limit": 1000}, headers=auditor).json()
    assert rest["entries"][0]["seq"] == 3 and rest["next_after"] is None
    assert page["total"] == 2 + len(rest["entries"])


def test_expired_permit_is_marked_and_public_register_says_so(api, keycloak):
    req = submitted(api, keycloak)
    pid = review(api, keycloak, req["id"], "rev1").json()["permit_id"]
    db = api.app.state.portal.db
    with db.transaction() as cur:
        cur.execute("UPDATE permit SET expires_at = now() - INTERVAL 1 DAY WHERE id = ?", [pid])
    permit = api.get(f"/v1/permits/{pid}", headers=bearer(keycloak.token("alice"))).json()
    assert permit["status"] == "expired"
    entries = api.get("/v1/audit", params={"limit": 1000},
                      headers=bearer(keycloak.token("auditor1"))).json()["entries"]
    assert any(e["action"] == "permit.expire" and e["object_id"] == pid for e in entries)


def test_the_public_register_records_an_expiry_it_is_first_to_see(api, keycloak):
    req = submitted(api, keycloak)
    pid = review(api, keycloak, req["id"], "rev1").json()["permit_id"]
    portal = api.app.state.portal
    with portal.db.transaction() as cur:
        cur.execute("UPDATE permit SET expires_at = now() - INTERVAL 1 DAY WHERE id = ?", [pid])
    register = api.get("/v1/transparency").json()
    assert {p["permit_id"]: p["status"] for p in register["permits"]}[pid] == "expired"
    expiries = [e for e in portal.audit.entries() if e.action == "permit.expire"]
    assert [e.object_id for e in expiries] == [pid] and expiries[0].actor == "system"
    api.get("/v1/transparency")  # once recorded, never again
    assert len([e for e in portal.audit.entries() if e.action == "permit.expire"]) == 1
