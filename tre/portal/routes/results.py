"""Results of portal-submitted runs, sent by their ServerApp with the run's credential."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Body, Depends, Header, Request

from access_control.deps import bearer_secret
from tre.portal.context import Portal
from tre.portal.routes import portal
from tre.portal.services import results

router = APIRouter(prefix="/v1/results", tags=["runs"])
MODEL_PATH = re.compile(r"^/v1/results/model$")
FLOWER_RUN = Header(alias="X-Flower-Run-Id", ge=1, description="the Flower run reporting")


@router.post("/events", status_code=204)
def add_event(event: dict[str, Any] = Body(...), p: Portal = Depends(portal),
              credential: str = Depends(bearer_secret), flower_run: int = FLOWER_RUN) -> None:
    """One progress event of the run (a round, its end)."""
    results.add_event(p, credential, flower_run, event)


@router.put("/model", status_code=204)
async def put_model(request: Request, p: Portal = Depends(portal),
                    credential: str = Depends(bearer_secret), flower_run: int = FLOWER_RUN
                    ) -> None:
    """The final model's weights (for the airlock), once, before the report."""
    results.put_model(p, credential, flower_run, await request.body())


@router.put("/report", status_code=204)
def put_report(report: dict[str, Any] = Body(...), p: Portal = Depends(portal),
               credential: str = Depends(bearer_secret), flower_run: int = FLOWER_RUN
               ) -> None:
    """The run's report, once: the run's follower takes it from here."""
    results.put_report(p, credential, flower_run, report)
