"""The public indicators of proposal 56c, as JSON (the page `/indicators` shows them)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from tre.portal.context import Portal
from tre.portal.routes import portal
from tre.portal.services import indicators

router = APIRouter(tags=["public"])


@router.get("/v1/indicators")
def public_indicators(p: Portal = Depends(portal)) -> dict[str, Any]:
    """Projects hosted, access delays per quarter (median and 90th percentile, from the
    first submission), refusals with their reasons, audit results: no personal data."""
    return indicators.indicators(p)
