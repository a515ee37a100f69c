"""The airlock: output checkers release run outputs; permit holders download them."""

from __future__ import annotations

import mimetypes
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from access_control.deps import require
from access_control.policy import Action, is_allowed
from access_control.tokens import Principal
from tre.portal.context import Portal
from tre.portal.routes import portal
from tre.portal.schemas import OutputReviewIn
from tre.portal.services import airlock

router = APIRouter(prefix="/v1/outputs", tags=["airlock"])


@router.get("")
def list_outputs(p: Portal = Depends(portal),
                 who: Principal = Depends(require(Action.RUN_READ))) -> list[dict[str, Any]]:
    return airlock.list_outputs(p, who, checker=is_allowed(who, Action.OUTPUT_REVIEW))


@router.get("/{oid}")
def get_output(oid: str, p: Portal = Depends(portal),
               who: Principal = Depends(require(Action.RUN_READ))) -> dict[str, Any]:
    return airlock.get_output(p, who, oid, checker=is_allowed(who, Action.OUTPUT_REVIEW))


@router.get("/{oid}/card")
def get_card(oid: str, p: Portal = Depends(portal),
             who: Principal = Depends(require(Action.RUN_READ))) -> dict[str, Any]:
    """The model card of a run's output: what checkers review and the holder downloads."""
    return airlock.get_card(p, who, oid, checker=is_allowed(who, Action.OUTPUT_REVIEW))


@router.post("/{oid}/reviews")
def review_output(oid: str, body: OutputReviewIn, p: Portal = Depends(portal),
                  who: Principal = Depends(require(Action.OUTPUT_REVIEW))) -> dict[str, Any]:
    return airlock.review_output(p, who, oid, body.decision.value, body.rationale)


@router.get("/{oid}/files/{name}")
def download(oid: str, name: str, p: Portal = Depends(portal),
             who: Principal = Depends(require(Action.OUTPUT_DOWNLOAD))) -> Response:
    data, filename = airlock.download(p, who, oid, name)
    media = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return Response(data, media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
