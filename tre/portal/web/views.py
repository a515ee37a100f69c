"""Pages for researchers, reviewers and auditors, and the public register.

Each page: ask the policy table (`needs(Action…)`), call one service function —
the same ones the JSON API calls — and render. Errors the services raise become
HTML error pages (see `pages.PageRoute`).
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Form, Query, Request
from fastapi.responses import Response, StreamingResponse

from access_control.policy import Action
from tre.core.schemas import Purpose
from tre.portal.errors import DomainError, Invalid
from tre.portal.schemas import (
    AccessRequest,
    DataForm,
    Decision,
    LegalBasis,
    RequestPatch,
    ReviewIn,
    RevokeIn,
)
from tre.portal.services import access, indicators
from tre.portal.web import charts, forms
from tre.portal.web.pages import Ctx, PageError, context, needs, redirect, render, web_router

router = web_router()

AUDIT_PAGE = 50
AUDIT_MAX_PAGE = 500


def _choices() -> dict[str, list[str]]:
    return {"purposes": [p.value for p in Purpose],
            "legal_bases": [b.value for b in LegalBasis],
            "data_forms": [f.value for f in DataForm],
            "decisions": [d.value for d in Decision]}


# ---------------------------------------------------------------- public pages


@router.get("/")
def home(ctx: Ctx = Depends(context)) -> Response:
    """What this user can do, as tiles; anonymous visitors get the public register."""
    return render(ctx, "home.html")


@router.get("/transparency")
def transparency(ctx: Ctx = Depends(context)) -> Response:
    """The public register of permits and refusals (no login, no personal data)."""
    return render(ctx, "transparency.html", register=access.transparency(ctx.portal))


@router.get("/indicators")
def indicators_page(ctx: Ctx = Depends(context)) -> Response:
    """The public indicators (proposal 56c) with their delay chart (no login)."""
    figures = indicators.indicators(ctx.portal)
    return render(ctx, "indicators.html", figures=figures, delays=indicators.DELAYS,
                  chart=charts.delay_chart(figures["quarters"], indicators.DELAYS))


# ---------------------------------------------------------------- access requests


def _own(ctx: Ctx, req: AccessRequest) -> bool:
    return ctx.user is not None and req.applicant_sub == ctx.user.subject


@router.get("/requests")
def requests_list(ctx: Ctx = Depends(needs(Action.REQUEST_READ))) -> Response:
    reqs = access.list_requests(ctx.portal, ctx.user)
    reqs.sort(key=lambda r: r.created_at, reverse=True)
    return render(ctx, "requests.html", requests=reqs,
                  all_requests=ctx.allowed(Action.REQUEST_READ_ALL))


def _request_form(ctx: Ctx, *, values: dict[str, Any], errors: forms.Errors | None = None,
                  req: AccessRequest | None = None, problem: str | None = None,
                  status: int = 200) -> Response:
    return render(ctx, "request_form.html", status=status, values=values, errors=errors or {},
                  req=req, problem=problem, apps=access.list_apps(ctx.portal), **_choices())


@router.get("/requests/new")
def request_new(dataset: list[str] = Query([], max_length=50),
                ctx: Ctx = Depends(needs(Action.REQUEST_CREATE))) -> Response:
    """The empty form; `?dataset=hospital/dataset` (from the catalogue) pre-fills rows."""
    org = ctx.user.organisation if ctx.user else None
    rows = [dict(zip(("node_id", "dataset_id"), d.split("/", 1), strict=True))
            for d in dataset if d.count("/") == 1]
    values = {"organisation": org or "", "datasets": rows or [{"node_id": "", "dataset_id": ""}],
              "duration_days": "90", "min_hospitals": "1", "delta": "1e-5",
              "data_form": DataForm.PSEUDONYMISED.value}
    return _request_form(ctx, values=values)


@router.post("/requests/new")
async def request_create(request: Request,
                         ctx: Ctx = Depends(needs(Action.REQUEST_CREATE))) -> Response:
    values = forms.request_values(await request.form())
    fields, errors = forms.parse_request(values, ctx._)
    if fields is None:
        return _request_form(ctx, values=values, errors=errors, status=422,
                             problem=ctx._("The request has errors; see the fields marked "
                                           "below."))
    try:
        req = access.create_request(ctx.portal, ctx.user, fields)
    except Invalid as exc:
        return _request_form(ctx, values=values, problem=exc.message, status=422)
    ctx.flash(ctx._("Request saved as a draft. Submit it when it is complete."))
    return redirect(f"/requests/{req.id}")


@router.get("/requests/{rid}")
def request_detail(rid: str, ctx: Ctx = Depends(needs(Action.REQUEST_READ))) -> Response:
    req = access.get_request(ctx.portal, ctx.user, rid)
    own = _own(ctx, req)
    return render(ctx, "request_detail.html", req=req, own=own,
                  editable=own and req.status in access.EDITABLE,
                  withdrawable=own and req.status in access.WITHDRAWABLE,
                  reviewable=not own and req.status in access.REVIEWABLE
                  and ctx.allowed(Action.REQUEST_REVIEW))


@router.get("/requests/{rid}/edit")
def request_edit(rid: str, ctx: Ctx = Depends(needs(Action.REQUEST_UPDATE))) -> Response:
    req = access.get_request(ctx.portal, ctx.user, rid)
    if not (_own(ctx, req) and req.status in access.EDITABLE):
        raise PageError(409, ctx._("This request can no longer be edited."))
    return _request_form(ctx, values=forms.values_from_request(req), req=req)


@router.post("/requests/{rid}/edit")
async def request_update(rid: str, request: Request,
                         ctx: Ctx = Depends(needs(Action.REQUEST_UPDATE))) -> Response:
    req = access.get_request(ctx.portal, ctx.user, rid)
    values = forms.request_values(await request.form())
    fields, errors = forms.parse_request(values, ctx._)
    if fields is None:
        return _request_form(ctx, values=values, errors=errors, req=req, status=422,
                             problem=ctx._("The request has errors; see the fields marked "
                                           "below."))
    patch = RequestPatch.model_validate(fields.model_dump())
    try:
        access.update_request(ctx.portal, ctx.user, rid, patch)
    except Invalid as exc:
        return _request_form(ctx, values=values, req=req, problem=exc.message, status=422)
    ctx.flash(ctx._("Changes saved."))
    return redirect(f"/requests/{rid}")


@router.post("/requests/{rid}/submit")
def request_submit(rid: str, ctx: Ctx = Depends(needs(Action.REQUEST_SUBMIT))) -> Response:
    access.submit_request(ctx.portal, ctx.user, rid)
    ctx.flash(ctx._("Request submitted for review."))
    return redirect(f"/requests/{rid}")


@router.post("/requests/{rid}/withdraw")
def request_withdraw(rid: str, ctx: Ctx = Depends(needs(Action.REQUEST_WITHDRAW))) -> Response:
    access.withdraw_request(ctx.portal, ctx.user, rid)
    ctx.flash(ctx._("Request withdrawn."))
    return redirect(f"/requests/{rid}")


# ---------------------------------------------------------------- reviews


def _awaits_me(ctx: Ctx, req: AccessRequest) -> bool:
    """In the queue: awaiting review, not mine, and I have not voted in this round."""
    if req.status not in access.REVIEWABLE or _own(ctx, req):
        return False
    return not any(r["reviewer_sub"] == ctx.user.subject and r["review_round"] == req.review_round
                   for r in req.reviews)


@router.get("/review")
def review_queue(ctx: Ctx = Depends(needs(Action.REQUEST_REVIEW))) -> Response:
    reqs = [r for r in access.list_requests(ctx.portal, ctx.user) if _awaits_me(ctx, r)]
    reqs.sort(key=lambda r: r.submitted_at or r.created_at)
    return render(ctx, "review_queue.html", requests=reqs)


def _review_page(ctx: Ctx, req: AccessRequest, *, values: dict[str, str] | None = None,
                 errors: forms.Errors | None = None, problem: str | None = None,
                 status: int = 200) -> Response:
    blocked = None
    if _own(ctx, req):
        blocked = ctx._("You applied for this request: someone else must review it.")
    elif req.status not in access.REVIEWABLE:
        blocked = ctx._("This request is not awaiting review.")
    elif not _awaits_me(ctx, req):
        blocked = ctx._("You already reviewed this request in this round.")
    votes = [r for r in req.reviews if r["review_round"] == req.review_round]
    return render(ctx, "review_form.html", status=status, req=req, values=values or {},
                  errors=errors or {}, problem=problem, blocked=blocked, votes=votes,
                  quorum=ctx.portal.settings.review_quorum, **_choices())


@router.get("/review/{rid}")
def review_form(rid: str, ctx: Ctx = Depends(needs(Action.REQUEST_REVIEW))) -> Response:
    return _review_page(ctx, access.get_request(ctx.portal, ctx.user, rid))


@router.post("/review/{rid}")
def review_decide(rid: str, decision: str = Form(""), rationale: str = Form(""),
                  cond_epsilon: str = Form(""), cond_duration_days: str = Form(""),
                  ctx: Ctx = Depends(needs(Action.REQUEST_REVIEW))) -> Response:
    req = access.get_request(ctx.portal, ctx.user, rid)
    values = {"decision": decision, "rationale": rationale, "cond_epsilon": cond_epsilon,
              "cond_duration_days": cond_duration_days}
    data: dict[str, Any] = {"rationale": rationale.strip()}
    if decision:
        data["decision"] = decision
    conditions = {k: forms.number(v.strip()) for k, v in
                  (("epsilon", cond_epsilon), ("duration_days", cond_duration_days)) if v.strip()}
    if conditions:
        data["conditions"] = conditions
    body, errors = forms.parse(ReviewIn, data, ctx._)
    if body is None:
        return _review_page(ctx, req, values=values, errors=errors, status=422)
    try:
        access.review_request(ctx.portal, ctx.user, rid, body)
    except DomainError as exc:
        return _review_page(ctx, req, values=values, problem=exc.message,
                            status=exc.status_code)
    ctx.flash(ctx._("Decision recorded."))
    return redirect("/review")


# ---------------------------------------------------------------- permits


@router.get("/permits")
def permits_list(ctx: Ctx = Depends(needs(Action.PERMIT_READ))) -> Response:
    permits = access.list_permits(ctx.portal, ctx.user)
    titles = {r.id: r.title for r in access.list_requests(ctx.portal, ctx.user)}
    permits.sort(key=lambda p: p["issued_at"], reverse=True)
    return render(ctx, "permits.html", permits=permits, titles=titles,
                  all_permits=ctx.allowed(Action.PERMIT_READ_ALL))


def _permit_page(ctx: Ctx, pid: str, *, errors: forms.Errors | None = None,
                 reason: str = "", status: int = 200) -> Response:
    permit = access.get_permit(ctx.portal, ctx.user, pid)
    req = access.get_request(ctx.portal, ctx.user, permit["request_id"])
    return render(ctx, "permit_detail.html", status=status, permit=permit, req=req,
                  errors=errors or {}, reason=reason,
                  revocable=permit["status"] == "active"
                  and ctx.allowed(Action.PERMIT_REVOKE))


@router.get("/permits/{pid}")
def permit_detail(pid: str, ctx: Ctx = Depends(needs(Action.PERMIT_READ))) -> Response:
    return _permit_page(ctx, pid)


@router.post("/permits/{pid}/revoke")
def permit_revoke(pid: str, reason: str = Form(""),
                  ctx: Ctx = Depends(needs(Action.PERMIT_REVOKE))) -> Response:
    body, errors = forms.parse(RevokeIn, {"reason": reason.strip()}, ctx._)
    if body is None:
        return _permit_page(ctx, pid, errors=errors, reason=reason, status=422)
    access.revoke_permit(ctx.portal, ctx.user, pid, body.reason)
    ctx.flash(ctx._("Permit revoked."))
    return redirect(f"/permits/{pid}")


# ---------------------------------------------------------------- audit


def _audit_page(ctx: Ctx, after: int, limit: int, action: str | None,
                verdict: dict[str, Any] | None = None) -> Response:
    log = ctx.portal.audit
    entries = log.entries(after_seq=after, limit=limit, action=action or None)
    total = log.count()
    pages = {
        "first": 0 if after > 0 else None,
        "previous": max(0, after - limit) if after > 0 and not action else None,
        "next": entries[-1].seq if len(entries) == limit else None,
        "last": max(0, total - limit) if not action and after + limit < total else None,
    }
    return render(ctx, "audit.html", entries=entries, total=total, after=after, limit=limit,
                  action=action or "", pages=pages, verdict=verdict)


@router.get("/audit")
def audit_log(after: int = Query(0, ge=0), limit: int = Query(AUDIT_PAGE, ge=1,
                                                              le=AUDIT_MAX_PAGE),
              action: str | None = Query(None, max_length=100),
              ctx: Ctx = Depends(needs(Action.AUDIT_READ))) -> Response:
    return _audit_page(ctx, after, limit, action)


@router.get("/audit/verify")
def audit_verify(after: int = Query(0, ge=0), limit: int = Query(AUDIT_PAGE, ge=1,
                                                                 le=AUDIT_MAX_PAGE),
                 action: str | None = Query(None, max_length=100),
                 ctx: Ctx = Depends(needs(Action.AUDIT_VERIFY))) -> Response:
    """Walk the whole hash chain now and show the verdict above the log."""
    return _audit_page(ctx, after, limit, action, verdict=ctx.portal.audit.verify().as_dict())


@router.get("/audit/export")
def audit_export(ctx: Ctx = Depends(needs(Action.AUDIT_READ))) -> Response:
    """The whole log as JSON lines, for offline verification with `tre audit verify`."""
    lines = (line + "\n" for line in ctx.portal.audit.export_jsonl())
    return StreamingResponse(lines, media_type="application/x-ndjson", headers={
        "Content-Disposition": 'attachment; filename="portal-audit.jsonl"'})
