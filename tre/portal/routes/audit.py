"""The auditor's view of the portal's hash-chained log, the checkpoints, the nodes' logs."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Query

from access_control.deps import require
from access_control.policy import Action
from access_control.tokens import Principal
from tre.portal.context import Portal
from tre.portal.routes import portal
from tre.portal.schemas import AuditExportIn, CheckpointIn, Party, VerificationIn
from tre.portal.services import checkpoints

router = APIRouter(prefix="/v1/audit", tags=["audit"])
#: A node's whole log is larger than an ordinary body: the upload limit applies.
EXPORT_PATH = re.compile(r"^/v1/audit/nodes/[^/]+/export$")


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


@router.post("/nodes/{party}/export", status_code=201)
def upload_node_export(party: Party, body: AuditExportIn, p: Portal = Depends(portal),
                       who: Principal = Depends(require(Action.AUDIT_EXPORT_UPLOAD))
                       ) -> dict[str, Any]:
    """A node's signed log (audit rows only), for its own hospital, kept for auditors."""
    return checkpoints.receive_export(p, who, party, body)


@router.get("/nodes/{party}/export")
def node_export(party: Party, p: Portal = Depends(portal),
                who: Principal = Depends(require(Action.AUDIT_EXPORT_READ))) -> dict[str, Any]:
    """The newest log the node uploaded, its signature and the node's enrolled key:
    `tre audit verify --portal URL --party P` checks all three against the checkpoints."""
    return checkpoints.export_of(p, who, party)


@router.post("/verifications", status_code=201)
def record_verification(body: VerificationIn, p: Portal = Depends(portal),
                        who: Principal = Depends(require(Action.AUDIT_VERIFICATION_RECORD))
                        ) -> dict[str, Any]:
    """An auditor's result for one party's log, published in the register."""
    return checkpoints.record_verification(p, who, body)


@router.get("/verifications", tags=["public"])
def latest_verifications(p: Portal = Depends(portal)) -> list[dict[str, Any]]:
    """Each party's newest independent verification: result, rows, date."""
    return checkpoints.latest_verifications(p)
