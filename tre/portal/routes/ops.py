"""Operator routes: backups, permit-key rotation and retirement, Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from access_control.deps import require
from access_control.policy import Action
from access_control.tokens import Principal
from tre.portal.context import Portal
from tre.portal.routes import portal
from tre.portal.services import ops

router = APIRouter()


@router.post("/v1/admin/backup", tags=["operations"])
def backup(p: Portal = Depends(portal),
           who: Principal = Depends(require(Action.STORE_BACKUP))) -> dict[str, Any]:
    return ops.backup(p, who)


@router.post("/v1/permit-keys/rotate", tags=["operations"])
def rotate(p: Portal = Depends(portal),
           who: Principal = Depends(require(Action.PERMIT_KEYS_ROTATE))) -> dict[str, Any]:
    return ops.rotate_permit_key(p, who)


@router.post("/v1/permit-keys/{kid}/retire", tags=["operations"])
def retire(kid: str, p: Portal = Depends(portal),
           who: Principal = Depends(require(Action.PERMIT_KEYS_RETIRE))) -> dict[str, Any]:
    """Retire a compromised permit key: every node refuses what it signed."""
    return ops.retire_permit_key(p, who, kid)


@router.get("/metrics", tags=["operations"])
def metrics(p: Portal = Depends(portal)) -> Response:
    """Aggregate gauges only (no personal data), in Prometheus text format."""
    return Response(ops.metrics_text(p), media_type=CONTENT_TYPE_LATEST)
