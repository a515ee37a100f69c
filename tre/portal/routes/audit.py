"""The auditor's view of the portal's hash-chained log."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from access_control.deps import require
from access_control.policy import Action
from access_control.tokens import Principal
from tre.portal.context import Portal
from tre.portal.routes import portal
from tre.portal.schemas import CheckpointIn
from tre.portal.services import checkpoints

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("")
def audit_entries(after: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000),
                  p: Portal = Depends(portal),
                  _: Principal = Depends(require(Action.AUDIT_READ))) -> dict[str, Any]:
    entries = p.audit.entries(after_seq=after, limit=limit)
    return {
        "entries": [e.as_dict() for e in entries],
        "next_after": entries[-1].seq if len(entries) == limit else None,
        "total": p.audit.count(),
    }


@router.get("/verify")
def audit_verify(p: Portal = Depends(portal),
                 _: Principal = Depends(require(Action.AUDIT_VERIFY))) -> dict[str, Any]:
    return p.audit.verify().as_dict()


@router.post("/checkpoints", status_code=201)
def send_checkpoint(body: CheckpointIn, p: Portal = Depends(portal),
                    who: Principal = Depends(require(Action.AUDIT_CHECKPOINT))) -> dict[str, Any]:
    return checkpoints.receive(p, who, body)


@router.get("/checkpoints", tags=["public"])
def latest_checkpoints(p: Portal = Depends(portal)) -> list[dict[str, Any]]:
    """Each party's newest signed chain head and the key that verifies it."""
    return checkpoints.latest(p)


@router.get("/checkpoints/{party}", tags=["public"])
def party_checkpoints(party: str, p: Portal = Depends(portal)) -> list[dict[str, Any]]:
    """Every checkpoint of one party: `tre audit verify --checkpoints` reads this list."""
    return checkpoints.of_party(p, party)
