"""Node enrolment: a hospital's SuperNode key, registered with the SuperLink by the portal."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from access_control.deps import require
from access_control.policy import Action
from access_control.tokens import Principal
from tre.portal.context import Portal
from tre.portal.routes import portal
from tre.portal.schemas import NodeKeyIn
from tre.portal.services import nodes

router = APIRouter(prefix="/v1/nodes", tags=["nodes"])


@router.put("/{hospital_id}/flower-key")
def enrol_node(hospital_id: str, body: NodeKeyIn, p: Portal = Depends(portal),
               who: Principal = Depends(require(Action.NODE_ENROL))) -> dict[str, Any]:
    return nodes.register(p, who, hospital_id, body.public_key)


@router.get("")
def list_nodes(p: Portal = Depends(portal),
               _: Principal = Depends(require(Action.NODE_VIEW))) -> list[dict[str, Any]]:
    return nodes.list_nodes(p)
