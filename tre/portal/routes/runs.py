"""Federated runs: researchers start them under a permit; the portal drives Flower."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from access_control.deps import require
from access_control.policy import Action
from access_control.tokens import Principal
from tre.portal.context import Portal
from tre.portal.routes import portal
from tre.portal.schemas import RunIn
from tre.portal.services import runs

router = APIRouter(prefix="/v1/runs", tags=["runs"])


@router.post("", status_code=202)
def start_run(body: RunIn, p: Portal = Depends(portal),
              who: Principal = Depends(require(Action.RUN_START))) -> dict[str, Any]:
    return runs.start_run(p, who, body)


@router.get("")
def list_runs(p: Portal = Depends(portal),
              who: Principal = Depends(require(Action.RUN_READ))) -> list[dict[str, Any]]:
    return runs.list_runs(p, who)


@router.get("/{run_id}")
def get_run(run_id: str, p: Portal = Depends(portal),
            who: Principal = Depends(require(Action.RUN_READ))) -> dict[str, Any]:
    return runs.get_run(p, who, run_id)


@router.post("/{run_id}/cancel")
def cancel_run(run_id: str, p: Portal = Depends(portal),
               who: Principal = Depends(require(Action.RUN_CANCEL))) -> dict[str, Any]:
    return runs.cancel_run(p, who, run_id)


@router.get("/flower/{flower_run_id}/ticket")
def run_ticket(flower_run_id: str, p: Portal = Depends(portal),
               who: Principal = Depends(require(Action.RUN_TICKET))) -> dict[str, str]:
    """The signed ticket a hospital's node needs to answer a run the portal submitted."""
    return runs.run_ticket(p, who, flower_run_id)


@router.get("/hospitals/{hospital_id}", tags=["runs"])
def hospital_activity(hospital_id: str, p: Portal = Depends(portal),
                      who: Principal = Depends(require(Action.NODE_VIEW))) -> dict[str, Any]:
    """Runs on this hospital's data and ε spent per dataset (the node operator's view)."""
    return runs.hospital_activity(p, who, hospital_id)
