"""A person's own page (`/me`): their consents with history and receipts, their
choice per purpose, and the approved projects whose runs used their records. Same
service and policy rows as `/v1/me`; the service derives who they are from their
token, so no page takes a subject."""

from __future__ import annotations

from fastapi import Depends, Form
from fastapi.responses import Response

from access_control.policy import Action
from tre.core.schemas import ConsentStatus, Purpose
from tre.portal.consent_schemas import PurposeChoice
from tre.portal.services import me
from tre.portal.web import forms
from tre.portal.web.pages import Ctx, PageError, needs, redirect, render, web_router

router = web_router()


@router.get("/me")
def my_page(ctx: Ctx = Depends(needs(Action.ME_READ))) -> Response:
    mine = me.my_consents(ctx.portal, ctx.user)
    own = {c.organisation: c for c in mine["items"]}
    choices = [(p.value, own.get(me.own_organisation(ctx.portal, p))) for p in Purpose]
    return render(ctx, "me.html", mine=mine, choices=choices,
                  runs=me.my_runs(ctx.portal, ctx.user).items)


@router.post("/me/purposes/{purpose}")
def choose(purpose: Purpose, status: ConsentStatus = Form(...), reason: str = Form(""),
           ctx: Ctx = Depends(needs(Action.ME_CONSENT))) -> Response:
    body, errors = forms.parse(PurposeChoice, {"status": status,
                                               "reason": reason.strip() or None}, ctx._)
    if body is None:
        raise PageError(422, "; ".join(m for ms in errors.values() for m in ms))
    me.set_purpose(ctx.portal, ctx.user, purpose, body.status, body.reason)
    ctx.flash(ctx._("Your consent was given.") if body.status is ConsentStatus.ACTIVE
              else ctx._("Your consent was withdrawn. Every hospital applies it before its "
                         "next run."))
    return redirect("/me")
