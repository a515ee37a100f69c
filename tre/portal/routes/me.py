"""A person's own view: `/v1/me/...`, for the `citizen` role, always about the caller
(the service derives their pseudonym from their token; no route takes a subject)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse

from access_control.deps import require
from access_control.policy import Action
from access_control.tokens import Principal
from tre.core.schemas import Purpose
from tre.portal.consent_schemas import Consent, MyConsents, MyRuns, PurposeChoice
from tre.portal.context import Portal
from tre.portal.problems import UNAVAILABLE
from tre.portal.routes import portal
from tre.portal.services import consent_receipts, me

router = APIRouter(prefix="/v1/me", tags=["me"])


@router.get("/consents", response_model=MyConsents, responses=UNAVAILABLE)
def my_consents(p: Portal = Depends(portal),
                who: Principal = Depends(require(Action.ME_READ))) -> dict[str, Any]:
    """Your consents, recorded by any organisation or by you, each with its history."""
    return me.my_consents(p, who)


@router.post("/purposes/{purpose}", response_model=Consent)
def choose(purpose: Purpose, body: PurposeChoice, p: Portal = Depends(portal),
           who: Principal = Depends(require(Action.ME_CONSENT))) -> Consent:
    """Give or withdraw your consent for one purpose; every node applies it before its
    next run."""
    return me.set_purpose(p, who, purpose, body.status, body.reason)


@router.get("/consents/{cid}/receipt", responses=UNAVAILABLE)
def receipt(cid: str, version: int | None = Query(None, ge=1),
            format: Literal["json", "html"] = "json", p: Portal = Depends(portal),
            who: Principal = Depends(require(Action.ME_READ))) -> Any:
    """The receipt of one of your consents: JSON, or a printable page with `format=html`."""
    data = me.receipt(p, who, cid, version)
    return HTMLResponse(consent_receipts.as_html(data)) if format == "html" else data


@router.get("/runs", response_model=MyRuns, responses=UNAVAILABLE)
def my_runs(p: Portal = Depends(portal),
            who: Principal = Depends(require(Action.ME_READ))) -> MyRuns:
    """The approved projects whose runs used your records, as the hospitals reported it."""
    return me.my_runs(p, who)
