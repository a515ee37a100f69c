"""The steward's consent pages: list, record, update, withdraw, import FHIR, and the
DGA activity report. Same services and policy rows as `/v1/consents`; a steward acts
for the organisation in their token, which the service enforces.

A steward may name the person by identifier on the record form and the list's search:
`static/pseudonymise.js` derives the pseudonym in the browser, and the portal only
relays the blinded element to the pseudonymisation service (`pseudonymise_relay`); it
never receives the identifier (docs/steward-identifiers.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import Depends, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from access_control.policy import Action
from pseudonymisation.client import PseudonymClient, PseudonymisationError
from pseudonymisation.identifiers import INS_NIA, INS_NIR, NHS_NUMBER, SYSTEMS, TEST_PERSON
from tre.core.schemas import ConsentStatus, Purpose
from tre.portal.consent_schemas import ConsentIn, ConsentPatch, WithdrawIn
from tre.portal.errors import DomainError
from tre.portal.services import consent_registry, consent_report
from tre.portal.web import forms
from tre.portal.web.pages import Ctx, needs, redirect, render, web_router

router = web_router()
PAGE = 50
FHIR_MAX_BYTES = 900_000  # under the portal's body limit, with room for the form around it


def _purposes() -> list[str]:
    return [p.value for p in Purpose]


def _identifier_systems(ctx: Ctx) -> list[tuple[str, str]]:
    """(system URI, label) of every system the browser can pseudonymise, INS first; none
    (no identifier widget) when the portal knows no pseudonymisation service."""
    if not ctx.request.app.state.settings.pseudonymiser_url:
        return []
    labels = {INS_NIR: ctx._("INS (NIR)"), INS_NIA: ctx._("INS (NIA)"),
              NHS_NUMBER: ctx._("NHS number"), TEST_PERSON: ctx._("Test person")}
    return [(system, labels[system]) for system in SYSTEMS]


class BlindedIn(BaseModel):
    blinded: str = Field(max_length=64, description="one blinded element, base64url")


@router.post("/consents/pseudonymise")
def pseudonymise_relay(body: BlindedIn,
                       ctx: Ctx = Depends(needs(Action.CONSENT_WRITE))) -> JSONResponse:
    """Relay one blinded element to the pseudonymisation service under the steward's own
    token (the service audits and rate-limits the steward). The element is uniformly
    random and the blind stays in the browser: the portal learns neither the identifier
    nor, from this exchange, the pseudonym."""
    settings = ctx.request.app.state.settings
    token = ctx.web.session.access_token if ctx.web.session else None
    if not settings.pseudonymiser_url or not token:
        return JSONResponse({"detail": ctx._("This portal has no pseudonymisation service "
                                             "configured.")}, status_code=503)
    ca = settings.pseudonymiser_ca
    try:
        with PseudonymClient(settings.pseudonymiser_url, lambda: token,
                             verify=str(ca) if ca else True, timeout_s=30) as service:
            evaluated = service.evaluate([body.blinded])
    except PseudonymisationError as exc:
        status = exc.status if exc.status and 400 <= exc.status < 500 else 503
        return JSONResponse({"detail": str(exc)}, status_code=status)
    return JSONResponse({"evaluated": evaluated[0]})


@router.get("/consents")
def consents_list(subject: str | None = Query(None, max_length=128),
                  status: ConsentStatus | Literal[""] | None = None,
                  organisation: str | None = Query(None, max_length=100),
                  offset: int = Query(0, ge=0),
                  ctx: Ctx = Depends(needs(Action.CONSENT_READ))) -> Response:
    status = status or None  # the filter form's "—" sends an empty status: any status
    page = consent_registry.list_consents(ctx.portal, ctx.user,
                                          organisation=organisation or None,
                                          subject=subject or None, status=status, limit=PAGE,
                                          offset=offset)
    return render(ctx, "consents.html", page=page, subject=subject or "",
                  systems=_identifier_systems(ctx),
                  status_filter=status.value if status else "",
                  organisation=organisation or "",
                  offset=offset, limit=PAGE, statuses=[s.value for s in ConsentStatus],
                  sees_all=ctx.allowed(Action.AUDIT_READ))


def _consent_form(ctx: Ctx, *, values: dict[str, Any], errors: forms.Errors | None = None,
                  problem: str | None = None, status: int = 200) -> Response:
    return render(ctx, "consent_form.html", status=status, values=values, errors=errors or {},
                  problem=problem, purposes=_purposes(), systems=_identifier_systems(ctx),
                  statuses=[s.value for s in ConsentStatus])


@router.get("/consents/new")
def consent_new(ctx: Ctx = Depends(needs(Action.CONSENT_WRITE))) -> Response:
    return _consent_form(ctx, values={"purposes": [], "status": ConsentStatus.ACTIVE.value})


def _consent_values(form: Any) -> dict[str, Any]:
    text = {k: (form.get(k) or "").strip() for k in
            ("subject", "status", "valid_from", "valid_to", "note")}
    return text | {"purposes": [p for p in form.getlist("purposes") if isinstance(p, str)]}


@router.post("/consents/new")
async def consent_create(request: Request,
                         ctx: Ctx = Depends(needs(Action.CONSENT_WRITE))) -> Response:
    values = _consent_values(await request.form())
    data = {k: v for k, v in values.items() if v not in ("", [])}
    data.setdefault("purposes", [])
    body, errors = forms.parse(ConsentIn, data, ctx._)
    if body is None:
        return _consent_form(ctx, values=values, errors=errors, status=422,
                             problem=ctx._("The form has errors; see the fields marked "
                                           "below."))
    try:
        created = consent_registry.record_consent(ctx.portal, ctx.user, body)
    except DomainError as exc:
        return _consent_form(ctx, values=values, problem=exc.message, status=exc.status_code)
    ctx.flash(ctx._("Consent recorded."))
    return redirect(f"/consents/{created.id}")


@router.get("/consents/import")
def import_form(ctx: Ctx = Depends(needs(Action.CONSENT_WRITE))) -> Response:
    return render(ctx, "consent_import.html", result=None, problem=None, pasted="")


@router.post("/consents/import")
async def import_fhir(fhir_file: UploadFile | None = None, fhir_text: str = Form(""),
                      ctx: Ctx = Depends(needs(Action.CONSENT_WRITE))) -> Response:
    """A FHIR R4 Consent or Bundle, uploaded as a file or pasted; all or nothing."""
    raw = fhir_text.strip().encode()
    if fhir_file is not None and fhir_file.filename:
        raw = await fhir_file.read(FHIR_MAX_BYTES + 1)
    problem = None
    if not raw:
        problem = ctx._("Choose a FHIR JSON file or paste its content.")
    elif len(raw) > FHIR_MAX_BYTES:
        problem = ctx._("The file is too large for the form; use the API for big imports.")
    if problem is None:
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            problem = ctx._("This is not valid JSON: {error}", error=str(exc))
    if problem is None:
        try:
            result = consent_registry.import_fhir(ctx.portal, ctx.user, payload)
        except DomainError as exc:
            problem = exc.message
    if problem is not None:
        return render(ctx, "consent_import.html", status=422, result=None, problem=problem,
                      pasted=fhir_text)
    return render(ctx, "consent_import.html", result=result, problem=None, pasted="")


@router.get("/consents/report")
def activity_report(year: int = Query(default_factory=lambda: datetime.now(UTC).year,
                                      ge=2000, le=2100),
                    organisation: str | None = Query(None, max_length=100),
                    ctx: Ctx = Depends(needs(Action.CONSENT_READ))) -> Response:
    """DGA Art. 20 activity-report material for one organisation and year."""
    sees_all = ctx.allowed(Action.AUDIT_READ)
    report = None
    if not sees_all or organisation:
        report = consent_report.activity_report(ctx.portal, ctx.user, organisation or None, year)
    return render(ctx, "consent_report.html", report=report, year=year,
                  organisation=organisation or "", sees_all=sees_all)


def _detail(ctx: Ctx, cid: str, *, errors: forms.Errors | None = None,
            values: dict[str, Any] | None = None, problem: str | None = None,
            status: int = 200) -> Response:
    found = consent_registry.get_consent(ctx.portal, ctx.user, cid)
    current = {"purposes": [p.value for p in found.purposes],
               "valid_from": found.valid_from.isoformat() if found.valid_from else "",
               "valid_to": found.valid_to.isoformat() if found.valid_to else ""}
    return render(ctx, "consent_detail.html", status=status, c=found, errors=errors or {},
                  values=values or current, problem=problem, purposes=_purposes(),
                  writable=ctx.allowed(Action.CONSENT_WRITE)
                  and ctx.user.organisation == found.organisation)


@router.get("/consents/{cid}")
def consent_detail(cid: str, ctx: Ctx = Depends(needs(Action.CONSENT_READ))) -> Response:
    return _detail(ctx, cid)


@router.post("/consents/{cid}/update")
async def consent_update(cid: str, request: Request,
                         ctx: Ctx = Depends(needs(Action.CONSENT_WRITE))) -> Response:
    values = _consent_values(await request.form())
    data: dict[str, Any] = {"purposes": values["purposes"],
                            "valid_from": values["valid_from"] or None,
                            "valid_to": values["valid_to"] or None}
    if values["status"]:
        data["status"] = values["status"]
    if values["note"]:
        data["note"] = values["note"]
    patch, errors = forms.parse(ConsentPatch, data, ctx._)
    if patch is None:
        return _detail(ctx, cid, errors=errors, values=values, status=422)
    try:
        consent_registry.update_consent(ctx.portal, ctx.user, cid, patch)
    except DomainError as exc:
        return _detail(ctx, cid, values=values, problem=exc.message, status=exc.status_code)
    ctx.flash(ctx._("Consent updated: a new version was recorded."))
    return redirect(f"/consents/{cid}")


@router.post("/consents/{cid}/withdraw")
def consent_withdraw(cid: str, reason: str = Form(""),
                     ctx: Ctx = Depends(needs(Action.CONSENT_WRITE))) -> Response:
    body, errors = forms.parse(WithdrawIn, {"reason": reason.strip() or None}, ctx._)
    if body is None:
        return _detail(ctx, cid, errors=errors, status=422)
    consent_registry.withdraw_consent(ctx.portal, ctx.user, cid, body.reason)
    ctx.flash(ctx._("Consent withdrawn. Every node applies it before its next run."))
    return redirect(f"/consents/{cid}")
