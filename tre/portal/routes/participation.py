"""A node's report of the people a run used, as membership tags (see
`tre.portal.services.participation` for what the portal learns from it)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from access_control.deps import require
from access_control.policy import Action
from access_control.tokens import Principal
from tre.portal.consent_schemas import RunMembersIn, RunMembersOut
from tre.portal.context import Portal
from tre.portal.routes import portal
from tre.portal.services import participation

router = APIRouter(prefix="/v1/runs", tags=["runs"])


@router.post("/flower/{flower_run_id}/members", response_model=RunMembersOut)
def report_members(flower_run_id: str, body: RunMembersIn, p: Portal = Depends(portal),
                   who: Principal = Depends(require(Action.RUN_MEMBERS))) -> RunMembersOut:
    """Tags of the people whose records this hospital's node used in a run."""
    return participation.record_members(p, who, flower_run_id, body)
