"""Access requests, reviews and permits (DESIGN §5 lifecycle).

draft → submitted → in_review → approved | rejected | changes_requested;
changes_requested → submitted; the applicant may withdraw before a decision.
The decision falls when `review_quorum` distinct reviewers (never the applicant)
have voted in the current round: all approve → approved (permit issued with the
strictest conditions); any reject → rejected; otherwise changes requested.
"""

from __future__ import annotations

import statistics
import uuid
from datetime import timedelta
from typing import Any

from access_control.policy import Action, is_allowed
from access_control.tokens import Principal
from tre.core.audit import AuditAction
from tre.core.schemas import PermitClaims, PermitDataset, PermitStatus
from tre.portal.context import Portal, utcnow
from tre.portal.errors import Conflict, Forbidden, Invalid, NotFound
from tre.portal.schemas import (
    AccessRequest,
    AppIn,
    Decision,
    RequestFields,
    RequestPatch,
    RequestState,
    ReviewIn,
)
from tre.portal.services import checkpoints
from tre.portal.store import access as store

EDITABLE = {RequestState.DRAFT, RequestState.CHANGES_REQUESTED}
WITHDRAWABLE = {RequestState.DRAFT, RequestState.SUBMITTED, RequestState.IN_REVIEW,
                RequestState.CHANGES_REQUESTED}
REVIEWABLE = {RequestState.SUBMITTED, RequestState.IN_REVIEW}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def _to_model(cur, row: dict[str, Any]) -> AccessRequest:
    """The API view of a request row (re-read with its permit id and reviews)."""
    return _model(store.request_details(cur, rid=row["id"])[0])


def _model(detail: dict[str, Any]) -> AccessRequest:
    start, end = detail.get("submitted_at"), detail.get("decided_at") or utcnow()
    days = (end - start).total_seconds() / 86400 if start else None
    return AccessRequest(**detail, days_elapsed=days)


def _load(cur, rid: str) -> dict[str, Any]:
    row = store.get_request(cur, rid)
    if row is None:
        raise NotFound(f"access request {rid} does not exist")
    return row


def _own(principal: Principal, row: dict[str, Any]) -> None:
    """Only the applicant changes a request. Whoever may not even read it is told what a
    missing request answers, so that a change does not confirm the id exists."""
    if row["applicant_sub"] != principal.subject:
        if not is_allowed(principal, Action.REQUEST_READ_ALL):
            raise NotFound(f"access request {row['id']} does not exist")
        raise Forbidden("only the applicant may change this request")


def _check_app(cur, app_id: str) -> None:
    if store.get_app(cur, app_id) is None:
        known = ", ".join(a["app_id"] for a in store.list_apps(cur)) or "none registered"
        raise Invalid(f"app {app_id!r} is not in the approved app catalogue (known: {known})")


def create_request(portal: Portal, principal: Principal, fields: RequestFields) -> AccessRequest:
    rid = _new_id("req")
    now = utcnow()
    with portal.db.transaction() as cur:
        _check_app(cur, fields.app_id)
        data = fields.model_dump(mode="json")
        store.insert_request(cur, rid, principal.subject, principal.username, data, now)
        portal.audit.append(cur, actor=principal.username, action=AuditAction.REQUEST_CREATE,
                            object_type="access_request", object_id=rid,
                            details={"title": fields.title, "purpose": fields.purpose.value})
        return _to_model(cur, _load(cur, rid))


def update_request(portal: Portal, principal: Principal, rid: str, patch: RequestPatch
                   ) -> AccessRequest:
    changes = patch.model_dump(mode="json", exclude_unset=True)
    if not changes:
        raise Invalid("the patch changes nothing: give at least one field")
    with portal.db.transaction() as cur:
        row = _load(cur, rid)
        _own(principal, row)
        if row["status"] not in EDITABLE:
            raise Conflict(f"request {rid} is {row['status']}: only a draft or a request with "
                           "changes requested can be edited")
        if "app_id" in changes:
            _check_app(cur, changes["app_id"])
        fields = RequestFields.model_validate(
            {k: row[k] for k in RequestFields.model_fields if k in row} | changes
        ).model_dump(mode="json")
        store.update_fields(cur, rid, fields, utcnow())
        portal.audit.append(cur, actor=principal.username, action=AuditAction.REQUEST_UPDATE,
                            object_type="access_request", object_id=rid,
                            details={"fields": sorted(changes)})
        return _to_model(cur, _load(cur, rid))


def submit_request(portal: Portal, principal: Principal, rid: str) -> AccessRequest:
    with portal.db.transaction() as cur:
        row = _load(cur, rid)
        _own(principal, row)
        if row["status"] not in EDITABLE:
            raise Conflict(f"request {rid} is {row['status']} and cannot be submitted")
        store.set_status(cur, rid, RequestState.SUBMITTED, utcnow(), submitted=True,
                         new_round=True)
        portal.audit.append(cur, actor=principal.username, action=AuditAction.REQUEST_SUBMIT,
                            object_type="access_request", object_id=rid)
        return _to_model(cur, _load(cur, rid))


def withdraw_request(portal: Portal, principal: Principal, rid: str) -> AccessRequest:
    with portal.db.transaction() as cur:
        row = _load(cur, rid)
        _own(principal, row)
        if row["status"] not in WITHDRAWABLE:
            raise Conflict(f"request {rid} is {row['status']}: it can no longer be withdrawn")
        store.set_status(cur, rid, RequestState.WITHDRAWN, utcnow())
        portal.audit.append(cur, actor=principal.username, action=AuditAction.REQUEST_WITHDRAW,
                            object_type="access_request", object_id=rid)
        return _to_model(cur, _load(cur, rid))


def get_request(portal: Portal, principal: Principal, rid: str) -> AccessRequest:
    def load() -> list[dict[str, Any]]:
        with portal.db.reader() as cur:
            return store.request_details(cur, rid=rid)

    found = portal.cache.get(("request", rid), load)
    if not found or (found[0]["applicant_sub"] != principal.subject
                     and not is_allowed(principal, Action.REQUEST_READ_ALL)):
        raise NotFound(f"access request {rid} does not exist")
    return _model(found[0])


def list_requests(portal: Portal, principal: Principal) -> list[AccessRequest]:
    owner = None if is_allowed(principal, Action.REQUEST_READ_ALL) else principal.subject
    with portal.db.reader() as cur:
        return [_model(d) for d in store.request_details(cur, applicant_sub=owner)]


def review_request(portal: Portal, principal: Principal, rid: str, review: ReviewIn
                   ) -> AccessRequest:
    now = utcnow()
    with portal.db.transaction() as cur:
        row = _load(cur, rid)
        if row["applicant_sub"] == principal.subject:
            raise Forbidden("nobody reviews their own request")
        if row["status"] not in REVIEWABLE:
            raise Conflict(f"request {rid} is {row['status']}: it is not awaiting review")
        rnd = row["review_round"]
        if any(r["reviewer_sub"] == principal.subject for r in store.reviews_for(cur, rid, rnd)):
            raise Conflict("you have already reviewed this request in this round")
        if review.conditions is not None and review.decision is not Decision.APPROVE:
            raise Invalid("conditions can only accompany an approval")
        conditions = review.conditions.model_dump(exclude_none=True) if review.conditions else None
        store.insert_review(cur, rid, rnd, principal.subject, principal.username,
                            review.decision.value, review.rationale, conditions, now)
        portal.audit.append(cur, actor=principal.username, action=AuditAction.REQUEST_REVIEW,
                            object_type="access_request", object_id=rid,
                            details={"decision": review.decision.value, "round": rnd,
                                     "rationale": review.rationale})
        votes = store.reviews_for(cur, rid, rnd)
        if len(votes) < portal.settings.review_quorum:
            store.set_status(cur, rid, RequestState.IN_REVIEW, now)
            return _to_model(cur, _load(cur, rid))
        decisions = {v["decision"] for v in votes}
        if decisions == {Decision.APPROVE.value}:
            outcome = RequestState.APPROVED
        elif Decision.REJECT.value in decisions:
            outcome = RequestState.REJECTED
        else:
            outcome = RequestState.CHANGES_REQUESTED
        store.set_status(cur, rid, outcome, now, decided=outcome != RequestState.CHANGES_REQUESTED)
        portal.audit.append(cur, actor=principal.username,
                            action=AuditAction(f"request.{outcome.value}"),
                            object_type="access_request", object_id=rid,
                            details={"reviewers": [v["reviewer_username"] for v in votes]})
        if outcome is RequestState.APPROVED:
            _issue_permit(portal, cur, _load(cur, rid), votes, principal)
        return _to_model(cur, _load(cur, rid))


def _issue_permit(portal: Portal, cur, row: dict[str, Any], votes: list[dict], principal: Principal
                  ) -> None:
    app = store.get_app(cur, row["app_id"])
    if app is None:
        raise Conflict(f"app {row['app_id']} was removed from the catalogue; cannot issue")
    epsilon, days = row["epsilon"], row["duration_days"]
    for vote in votes:
        cond = vote["conditions"] or {}
        epsilon = min(epsilon, cond.get("epsilon", epsilon))
        days = min(days, cond.get("duration_days", days))
    hospitals = {d["node_id"] for d in row["datasets"]}
    issued = utcnow()
    expires = issued + timedelta(days=days)
    pid = _new_id("pmt")
    claims = PermitClaims(
        iss=portal.settings.permit_issuer,
        permit_id=pid,
        request_id=row["id"],
        sub=row["applicant_sub"],
        purpose=row["purpose"],
        datasets=[PermitDataset(node_id=d["node_id"], dataset_id=d["dataset_id"],
                                epsilon_cap=epsilon, delta_cap=row["delta"])
                  for d in row["datasets"]],
        app_id=app["app_id"],
        app_hash=app["app_hash"],
        min_hospitals=min(row.get("min_hospitals", 1), len(hospitals)),
        iat=int(issued.timestamp()),
        nbf=int(issued.timestamp()),
        exp=int(expires.timestamp()),
    )
    token = portal.keys.sign(claims)
    store.insert_permit(cur, pid, row["id"], row["applicant_sub"], token,
                        claims.model_dump(mode="json"), issued, expires)
    portal.audit.append(cur, actor=principal.username, action=AuditAction.PERMIT_ISSUE,
                        object_type="permit", object_id=pid,
                        details={"request_id": row["id"], "epsilon_cap": epsilon,
                                 "delta_cap": row["delta"], "expires": expires.isoformat(),
                                 "kid": portal.keys.active_kid})


def expire_due_permits(portal: Portal) -> list[str]:
    """Expiry is a state change like any other: each permit past its expiry is marked
    expired with its audit row, the first time anyone looks, in a transaction of its own
    (so a refusal that follows cannot roll the record back)."""
    now = utcnow()
    with portal.db.reader() as cur:
        if not store.due_permits(cur, now):
            return []
    with portal.db.transaction() as cur:
        due = store.due_permits(cur, now)
        for pid in due:
            store.set_permit_status(cur, pid, PermitStatus.EXPIRED)
            portal.audit.append(cur, actor="system", action=AuditAction.PERMIT_EXPIRE,
                                object_type="permit", object_id=pid)
    return due


def get_permit(portal: Portal, principal: Principal, pid: str) -> dict[str, Any]:
    expire_due_permits(portal)
    with portal.db.reader() as cur:
        permit = store.get_permit(cur, pid)
    if permit is None or (
        permit["holder_sub"] != principal.subject
        and not is_allowed(principal, Action.PERMIT_READ_ALL)
    ):
        raise NotFound(f"permit {pid} does not exist")
    return permit


def list_permits(portal: Portal, principal: Principal) -> list[dict[str, Any]]:
    expire_due_permits(portal)
    owner = None if is_allowed(principal, Action.PERMIT_READ_ALL) else principal.subject
    with portal.db.reader() as cur:
        return store.list_permits(cur, owner)


def revoke_permit(portal: Portal, principal: Principal, pid: str, reason: str) -> dict[str, Any]:
    with portal.db.transaction() as cur:
        permit = store.get_permit(cur, pid)
        if permit is None:
            raise NotFound(f"permit {pid} does not exist")
        if permit["status"] == PermitStatus.REVOKED:
            raise Conflict(f"permit {pid} is already revoked")
        store.set_permit_status(cur, pid, PermitStatus.REVOKED, revoked_at=utcnow(),
                                reason=reason)
        portal.audit.append(cur, actor=principal.username, action=AuditAction.PERMIT_REVOKE,
                            object_type="permit", object_id=pid, details={"reason": reason})
        return store.get_permit(cur, pid)


def revoked_permits(portal: Portal) -> list[str]:
    with portal.db.reader() as cur:
        return store.revoked_permit_ids(cur)


def register_app(portal: Portal, principal: Principal, app: AppIn) -> dict[str, Any]:
    with portal.db.transaction() as cur:
        store.upsert_app(cur, app.app_id, app.app_hash, app.description, principal.username,
                         utcnow())
        portal.audit.append(cur, actor=principal.username, action=AuditAction.APP_REGISTER,
                            object_type="app", object_id=app.app_id,
                            details={"app_hash": app.app_hash})
        return store.get_app(cur, app.app_id)


def list_apps(portal: Portal) -> list[dict[str, Any]]:
    with portal.db.reader() as cur:
        return store.list_apps(cur)


def transparency(portal: Portal) -> dict[str, Any]:
    """The public register (EHDS Art. 57): permits and refusals, and each party's audit
    checkpoint and last independent verification; no personal data."""
    expire_due_permits(portal)
    with portal.db.reader() as cur:
        requests = store.list_requests(cur)
        permits = {p["request_id"]: p for p in store.list_permits(cur)}
        granted, refused, durations = [], [], []
        for r in requests:
            if r["decided_at"] and r["submitted_at"]:
                durations.append((r["decided_at"] - r["submitted_at"]).total_seconds() / 86400)
            entry = {
                "request_id": r["id"],
                "title": r["title"],
                "organisation": r["organisation"],
                "purpose": r["purpose"],
                "datasets": r["datasets"],
                "submitted_at": r["submitted_at"],
                "decided_at": r["decided_at"],
            }
            if r["status"] == RequestState.APPROVED and r["id"] in permits:
                p = permits[r["id"]]
                granted.append(entry | {
                    "permit_id": p["id"], "status": p["status"],
                    "epsilon_cap": p["claims"]["datasets"][0]["epsilon_cap"],
                    "delta_cap": p["claims"]["datasets"][0]["delta_cap"],
                    "issued_at": p["issued_at"], "expires_at": p["expires_at"],
                    "revoke_reason": p["revoke_reason"],
                })
            elif r["status"] == RequestState.REJECTED:
                rationales = [v["rationale"] for v in store.reviews_for(cur, r["id"],
                                                                        r["review_round"])
                              if v["decision"] == Decision.REJECT.value]
                refused.append(entry | {"justification": rationales})
    return {
        "permits": granted,
        "refusals": refused,
        "decisions": len(durations),
        "median_days_to_decision": statistics.median(durations) if durations else None,
        "audit": checkpoints.audit_status(portal),
    }
