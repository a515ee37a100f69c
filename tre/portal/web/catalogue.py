"""The catalogue page: what each hospital holds, as its node published it
(suppressed counts only, its synthetic version or the notice of its withdrawal),
with a shortcut to request access to a dataset."""

from __future__ import annotations

from fastapi import Depends
from fastapi.responses import Response

from access_control.policy import Action
from tre.portal.services import catalogue
from tre.portal.web.pages import Ctx, needs, render, web_router

router = web_router()


@router.get("/catalogue")
def catalogue_page(ctx: Ctx = Depends(needs(Action.CATALOGUE_READ))) -> Response:
    return render(ctx, "catalogue.html", datasets=catalogue.list_datasets(ctx.portal))


@router.get("/catalogue/{hospital_id}/{dataset_id}")
def dataset_page(hospital_id: str, dataset_id: str,
                 ctx: Ctx = Depends(needs(Action.CATALOGUE_READ))) -> Response:
    ds = catalogue.get_dataset(ctx.portal, hospital_id, dataset_id)
    return render(ctx, "dataset.html", ds=ds, synthetic=ds["synthetic"])
