"""The dataset catalogue: nodes publish descriptors, logged-in users browse."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from access_control.deps import require
from access_control.policy import Action
from access_control.tokens import Principal
from tre.portal.context import Portal
from tre.portal.routes import portal
from tre.portal.schemas import DatasetDescriptorIn
from tre.portal.services import catalogue

router = APIRouter(prefix="/v1/catalogue", tags=["catalogue"])


@router.post("/datasets", status_code=201)
def publish_dataset(body: DatasetDescriptorIn, p: Portal = Depends(portal),
                    who: Principal = Depends(require(Action.CATALOGUE_PUBLISH))) -> dict[str, Any]:
    return catalogue.publish(p, who, body)


@router.get("")
def list_catalogue(p: Portal = Depends(portal),
                   _: Principal = Depends(require(Action.CATALOGUE_READ))) -> list[dict[str, Any]]:
    return catalogue.list_datasets(p)


@router.get("/datasets/{hospital_id}/{dataset_id}")
def get_dataset(hospital_id: str, dataset_id: str, p: Portal = Depends(portal),
                _: Principal = Depends(require(Action.CATALOGUE_READ))) -> dict[str, Any]:
    return catalogue.get_dataset(p, hospital_id, dataset_id)
