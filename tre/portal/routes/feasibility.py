"""Feasibility counts: researchers ask, the portal queries the nodes through Flower."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from access_control.deps import require
from access_control.policy import Action
from access_control.tokens import Principal
from tre.portal.context import Portal
from tre.portal.routes import portal
from tre.portal.schemas import FeasibilityIn
from tre.portal.services import feasibility

router = APIRouter(prefix="/v1/feasibility", tags=["feasibility"])


@router.post("")
def run_feasibility(body: FeasibilityIn, p: Portal = Depends(portal),
                    who: Principal = Depends(require(Action.FEASIBILITY_RUN))) -> dict[str, Any]:
    return feasibility.run_feasibility(p, who, body)
