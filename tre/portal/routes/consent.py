"""The consent registry: stewards write their organisation's consents, nodes pull
snapshots, subjects get receipts, and the activity report is built from the portal's
permit, run and consent tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

from access_control.deps import require
from access_control.policy import Action
from access_control.tokens import Principal
from tre.core.schemas import ConsentStatus
from tre.portal.consent_schemas import (
    BulkImportIn,
    Consent,
    ConsentIn,
    ConsentPatch,
    ImportResult,
    Snapshot,
    WithdrawIn,
)
from tre.portal.context import Portal
from tre.portal.routes import portal
from tre.portal.services import consent_receipts, consent_registry, consent_report

router = APIRouter(prefix="/v1/consents", tags=["consent"])

FHIR_JSON = "application/fhir+json"
PARQUET = "application/vnd.apache.parquet"


@router.post("", status_code=201, response_model=Consent)
def record_consent(body: ConsentIn, p: Portal = Depends(portal),
                   who: Principal = Depends(require(Action.CONSENT_WRITE))) -> Consent:
    return consent_registry.record_consent(p, who, body)


@router.get("")
def list_consents(organisation: str | None = None, subject: str | None = None,
                  status: ConsentStatus | None = None,
                  limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0),
                  p: Portal = Depends(portal),
                  who: Principal = Depends(require(Action.CONSENT_READ))) -> dict[str, Any]:
    return consent_registry.list_consents(p, who, organisation=organisation,
                                          subject=subject, status=status, limit=limit,
                                          offset=offset)


@router.post("/import", response_model=ImportResult)
def bulk_import(body: BulkImportIn, p: Portal = Depends(portal),
                who: Principal = Depends(require(Action.CONSENT_WRITE))) -> ImportResult:
    """Many consents at once, all or none (an existing subject gets a new version)."""
    return consent_registry.bulk_import(p, who, body)


@router.post("/fhir", response_model=ImportResult)
def import_fhir(body: Any = Body(..., media_type=FHIR_JSON), p: Portal = Depends(portal),
                who: Principal = Depends(require(Action.CONSENT_WRITE))) -> ImportResult:
    """One FHIR R4 Consent or a Bundle of them; one bad entry rejects the whole bundle."""
    return consent_registry.import_fhir(p, who, body)


@router.get("/fhir")
def export_fhir(organisation: str | None = None, p: Portal = Depends(portal),
                who: Principal = Depends(require(Action.CONSENT_READ))) -> Response:
    """The registry's current state as a FHIR R4 Bundle of Consent resources."""
    return _fhir(consent_registry.export_fhir(p, who, organisation))


@router.get("/snapshot", response_model=Snapshot)
def snapshot(since: int = Query(0, ge=0), format: Literal["json", "parquet"] = "json",
             p: Portal = Depends(portal),
             who: Principal = Depends(require(Action.CONSENT_SNAPSHOT))) -> Any:
    """What nodes pull: every consent changed after `since` (a delta), or all (`full`).
    `format=parquet` carries the same columns with the metadata in X-Consent-* headers."""
    meta, table = consent_registry.snapshot(p, who, since)
    if format == "parquet":
        return Response(consent_registry.parquet_bytes(table), media_type=PARQUET, headers={
            "X-Consent-Kind": meta["kind"], "X-Consent-Since": str(meta["since"]),
            "X-Consent-Version": str(meta["version"]), "X-Consent-Count": str(meta["count"]),
            "X-Consent-Total": str(meta["total"]),
            "X-Consent-Generated-At": meta["generated_at"].isoformat()})
    return Snapshot(consents=table.to_pylist(), **meta)


@router.get("/report")
def activity_report(year: int = Query(default_factory=lambda: datetime.now(UTC).year,
                                      ge=2000, le=2100),
                    organisation: str | None = None, p: Portal = Depends(portal),
                    who: Principal = Depends(require(Action.CONSENT_READ))) -> dict[str, Any]:
    """DGA Art. 20 activity-report material of one organisation for one year."""
    return consent_report.activity_report(p, who, organisation, year)


@router.get("/{cid}", response_model=Consent)
def get_consent(cid: str, p: Portal = Depends(portal),
                who: Principal = Depends(require(Action.CONSENT_READ))) -> Consent:
    return consent_registry.get_consent(p, who, cid)


@router.patch("/{cid}", response_model=Consent)
def update_consent(cid: str, body: ConsentPatch, p: Portal = Depends(portal),
                   who: Principal = Depends(require(Action.CONSENT_WRITE))) -> Consent:
    return consent_registry.update_consent(p, who, cid, body)


@router.post("/{cid}/withdraw", response_model=Consent)
def withdraw_consent(cid: str, body: WithdrawIn | None = None, p: Portal = Depends(portal),
                     who: Principal = Depends(require(Action.CONSENT_WRITE))) -> Consent:
    """A withdrawal is a new version; nothing is deleted."""
    return consent_registry.withdraw_consent(p, who, cid, body.reason if body else None)


@router.get("/{cid}/fhir")
def consent_fhir(cid: str, p: Portal = Depends(portal),
                 who: Principal = Depends(require(Action.CONSENT_READ))) -> Response:
    return _fhir(consent_registry.consent_as_fhir(p, who, cid))


@router.get("/{cid}/receipt")
def receipt(cid: str, version: int | None = Query(None, ge=1),
            format: Literal["json", "html"] = "json", p: Portal = Depends(portal),
            who: Principal = Depends(require(Action.CONSENT_READ))) -> Any:
    """The subject's receipt: JSON, or a printable HTML page with `format=html`."""
    if format == "html":
        return HTMLResponse(consent_receipts.receipt_html(p, who, cid, version))
    return consent_receipts.receipt(p, who, cid, version)


def _fhir(resource: dict[str, Any]) -> Response:
    return JSONResponse(resource, media_type=FHIR_JSON)
