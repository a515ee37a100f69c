"""Synthetic releases in the catalogue: nodes upload gated tables, researchers download,
stewards and nodes withdraw."""

from __future__ import annotations

import re
from typing import Any, Literal

from fastapi import APIRouter, Depends, File, Query, UploadFile
from fastapi.responses import Response

from access_control.deps import require
from access_control.policy import Action
from access_control.tokens import Principal
from tre.portal.context import Portal
from tre.portal.errors import Invalid
from tre.portal.problems import GONE
from tre.portal.routes import portal
from tre.portal.schemas import WithdrawIn
from tre.portal.services import synthetic

router = APIRouter(prefix="/v1/catalogue", tags=["synthetic"])

#: The upload route takes megabytes (a table and its plots): the app gives requests to
#: this path `max_upload_bytes` instead of the general `max_body_bytes`.
UPLOAD_PATH = re.compile(r"^/v1/catalogue/datasets/[^/]+/[^/]+/synthetic$")


@router.post("/datasets/{hospital_id}/{dataset_id}/synthetic", status_code=201)
def upload_synthetic(
    hospital_id: str,
    dataset_id: str,
    table: UploadFile = File(description="The synthetic table, Parquet."),
    report: UploadFile = File(description="report.json: both reports and the gate verdict."),
    plots: list[UploadFile] | None = File(None, description="PNG plots (repeatable)."),
    p: Portal = Depends(portal),
    who: Principal = Depends(require(Action.CATALOGUE_PUBLISH)),
) -> dict[str, Any]:
    images: dict[str, bytes] = {}
    for part in plots or []:
        name = part.filename or ""
        if name in images:
            raise Invalid(f"plot {name!r} was sent twice")
        images[name] = part.file.read()
    return synthetic.upload(p, who, hospital_id, dataset_id, table=table.file.read(),
                            report=report.file.read(), plots=images)


@router.get("/{dataset_id}/synthetic", responses=GONE)
def download_synthetic(
    dataset_id: str,
    hospital_id: str | None = Query(None, description="Needed when several hospitals offer "
                                    "a synthetic version of this dataset id."),
    format: Literal["csv", "parquet"] = Query("csv"),  # noqa: A002 - the public parameter
    p: Portal = Depends(portal),
    who: Principal = Depends(require(Action.SYNTHETIC_DOWNLOAD)),
) -> Response:
    data, filename, media = synthetic.download(p, who, dataset_id, hospital_id, format)
    return Response(data, media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/datasets/{hospital_id}/{dataset_id}/synthetic/report")
def synthetic_report(hospital_id: str, dataset_id: str, p: Portal = Depends(portal),
                     _: Principal = Depends(require(Action.CATALOGUE_READ))) -> dict[str, Any]:
    return synthetic.report(p, hospital_id, dataset_id)


@router.get("/datasets/{hospital_id}/{dataset_id}/synthetic/plots/{name}.png", responses=GONE)
def synthetic_plot(hospital_id: str, dataset_id: str, name: str, p: Portal = Depends(portal),
                   _: Principal = Depends(require(Action.CATALOGUE_READ))) -> Response:
    return Response(synthetic.plot(p, hospital_id, dataset_id, f"{name}.png"),
                    media_type="image/png", headers={"Cache-Control": "private, max-age=300"})


@router.post("/synthetic/{release_id}/withdraw")
def withdraw_synthetic(release_id: str, body: WithdrawIn, p: Portal = Depends(portal),
                       who: Principal = Depends(require(Action.SYNTHETIC_WITHDRAW))
                       ) -> dict[str, Any]:
    """Withdraw a published release: downloads answer 410 from now on (audited)."""
    return synthetic.withdraw(p, who, release_id, body.reason)
