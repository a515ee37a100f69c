"""The feasibility form: a cohort sent to every hospital holding a matching dataset;
counts come back suppressed. Same service as `POST /v1/feasibility`."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Form
from fastapi.responses import Response
from pydantic import ValidationError

from access_control.policy import Action
from tre.core.schemas import Purpose
from tre.portal.errors import DomainError
from tre.portal.schemas import FeasibilityIn
from tre.portal.services import catalogue, feasibility
from tre.portal.web.pages import Ctx, needs, render, web_router

router = web_router()
FIELDS = ("dataset_id", "label", "modality", "sex", "age_min", "age_max", "purpose")


def _page(ctx: Ctx, *, values: dict[str, str], errors: dict[str, list[str]] | None = None,
          problem: str | None = None, result: dict[str, Any] | None = None,
          status: int = 200) -> Response:
    datasets = sorted({d["dataset_id"] for d in catalogue.list_datasets(ctx.portal)})
    return render(ctx, "feasibility.html", status=status, values=values, errors=errors or {},
                  problem=problem, result=result, datasets=datasets,
                  purposes=[p.value for p in Purpose])


@router.get("/feasibility")
def feasibility_form(ctx: Ctx = Depends(needs(Action.FEASIBILITY_RUN))) -> Response:
    return _page(ctx, values={"purpose": Purpose.SCIENTIFIC_RESEARCH.value})


def _cohort(values: dict[str, str]) -> dict[str, Any]:
    """Form fields → the body of `POST /v1/feasibility` (lists are comma-separated)."""
    cohort: dict[str, Any] = {}
    for name in ("label", "modality", "sex"):
        items = [v.strip() for v in values[name].split(",") if v.strip()]
        if items:
            cohort[name] = items
    for name in ("dataset_id", "age_min", "age_max"):
        if values[name].strip():
            cohort[name] = values[name].strip()
    return {"cohort": cohort, "purpose": values["purpose"] or Purpose.SCIENTIFIC_RESEARCH}


@router.post("/feasibility")
def feasibility_run(dataset_id: str = Form(""), label: str = Form(""), modality: str = Form(""),
                    sex: str = Form(""), age_min: str = Form(""), age_max: str = Form(""),
                    purpose: str = Form(""),
                    ctx: Ctx = Depends(needs(Action.FEASIBILITY_RUN))) -> Response:
    values = dict(zip(FIELDS, (dataset_id, label, modality, sex, age_min, age_max, purpose),
                      strict=True))
    try:
        body = FeasibilityIn.model_validate(_cohort(values))
    except ValidationError as exc:
        errors, whole = {}, []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"] if p not in ("cohort", "body")]
            if loc and loc[0] in FIELDS:
                errors.setdefault(loc[0], []).append(err["msg"])
            else:  # a rule across fields, e.g. age_min above age_max
                whole.append(err["msg"].removeprefix("Value error, "))
        return _page(ctx, values=values, errors=errors, problem="; ".join(whole) or None,
                     status=422)
    try:
        result = feasibility.run_feasibility(ctx.portal, ctx.user, body)
    except DomainError as exc:
        return _page(ctx, values=values, problem=exc.message, status=exc.status_code)
    return _page(ctx, values=values, result=result)
