"""Airlock pages: the output checkers' queue and decision form; the researcher's
outputs and downloads of released files. Same services as `/v1/outputs`."""

from __future__ import annotations

import mimetypes
from typing import Any

from fastapi import Depends, Form
from fastapi.responses import Response

from access_control.policy import Action
from tre.portal.errors import DomainError
from tre.portal.schemas import OutputDecision, OutputReviewIn
from tre.portal.services import airlock
from tre.portal.web import forms
from tre.portal.web.pages import Ctx, needs, redirect, render, web_router

router = web_router()
AWAITING = ("pending", "approved_once")


def _checker(ctx: Ctx) -> bool:
    return ctx.allowed(Action.OUTPUT_REVIEW)


def _awaits_me(ctx: Ctx, out: dict[str, Any]) -> bool:
    return (out["status"] in AWAITING and out["holder_sub"] != ctx.user.subject
            and not any(r["checker_sub"] == ctx.user.subject for r in out["reviews"]))


@router.get("/outputs")
def outputs_list(ctx: Ctx = Depends(needs(Action.RUN_READ))) -> Response:
    """Checkers: the airlock queue, then what was decided. Others: their own outputs."""
    checker = _checker(ctx)
    outs = airlock.list_outputs(ctx.portal, ctx.user, checker=checker)
    outs.sort(key=lambda o: o["created_at"], reverse=True)
    queue = [o for o in outs if checker and _awaits_me(ctx, o)]
    others = [o for o in outs if o not in queue]
    return render(ctx, "outputs.html", queue=queue, others=others, checker=checker)


def _output_page(ctx: Ctx, oid: str, *, values: dict[str, str] | None = None,
                 errors: forms.Errors | None = None, problem: str | None = None,
                 status: int = 200) -> Response:
    checker = _checker(ctx)
    out = airlock.get_output(ctx.portal, ctx.user, oid, checker=checker)
    failed = [c for c in out["checks"] if not c["passed"]]
    return render(ctx, "output_detail.html", status=status, out=out, failed=failed,
                  card=airlock.card_of(ctx.portal, out),
                  can_decide=checker and _awaits_me(ctx, out),
                  can_download=out["status"] == "released"
                  and out["holder_sub"] == ctx.user.subject
                  and ctx.allowed(Action.OUTPUT_DOWNLOAD),
                  values=values or {}, errors=errors or {}, problem=problem,
                  decisions=[d.value for d in OutputDecision])


@router.get("/outputs/{oid}")
def output_detail(oid: str, ctx: Ctx = Depends(needs(Action.RUN_READ))) -> Response:
    return _output_page(ctx, oid)


@router.get("/outputs/{oid}/card")
def output_card(oid: str, ctx: Ctx = Depends(needs(Action.RUN_READ))) -> Response:
    """The model card on a page of its own (same service as `/v1/outputs/{oid}/card`)."""
    checker = _checker(ctx)
    out = airlock.get_output(ctx.portal, ctx.user, oid, checker=checker)
    card = airlock.get_card(ctx.portal, ctx.user, oid, checker=checker)
    return render(ctx, "model_card.html", out=out, card=card)


@router.post("/outputs/{oid}/review")
def output_review(oid: str, decision: str = Form(""), rationale: str = Form(""),
                  ctx: Ctx = Depends(needs(Action.OUTPUT_REVIEW))) -> Response:
    values = {"decision": decision, "rationale": rationale}
    data = {"rationale": rationale.strip()} | ({"decision": decision} if decision else {})
    body, errors = forms.parse(OutputReviewIn, data, ctx._)
    if body is None:
        return _output_page(ctx, oid, values=values, errors=errors, status=422)
    try:
        airlock.review_output(ctx.portal, ctx.user, oid, body.decision.value, body.rationale)
    except DomainError as exc:
        return _output_page(ctx, oid, values=values, problem=exc.message,
                            status=exc.status_code)
    ctx.flash(ctx._("Decision recorded."))
    return redirect(f"/outputs/{oid}")


@router.get("/outputs/{oid}/files/{name}")
def output_download(oid: str, name: str,
                    ctx: Ctx = Depends(needs(Action.OUTPUT_DOWNLOAD))) -> Response:
    """A released file, for the permit holder only (the service audits the download)."""
    data, filename = airlock.download(ctx.portal, ctx.user, oid, name)
    media = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return Response(data, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="{filename}"',
        "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})
