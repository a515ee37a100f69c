"""Access requests, reviews, permits and the approved-app catalogue."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from access_control.deps import require
from access_control.policy import Action
from access_control.tokens import Principal
from tre.portal.context import Portal
from tre.portal.routes import portal
from tre.portal.schemas import AccessRequest, AppIn, RequestFields, RequestPatch, ReviewIn, RevokeIn
from tre.portal.services import access

router = APIRouter(prefix="/v1")


@router.post("/requests", status_code=201, response_model=AccessRequest, tags=["requests"])
def create_request(body: RequestFields, p: Portal = Depends(portal),
                   who: Principal = Depends(require(Action.REQUEST_CREATE))) -> AccessRequest:
    return access.create_request(p, who, body)


@router.patch("/requests/{rid}", response_model=AccessRequest, tags=["requests"])
def update_request(rid: str, body: RequestPatch, p: Portal = Depends(portal),
                   who: Principal = Depends(require(Action.REQUEST_UPDATE))) -> AccessRequest:
    return access.update_request(p, who, rid, body)


@router.post("/requests/{rid}/submit", response_model=AccessRequest, tags=["requests"])
def submit_request(rid: str, p: Portal = Depends(portal),
                   who: Principal = Depends(require(Action.REQUEST_SUBMIT))) -> AccessRequest:
    return access.submit_request(p, who, rid)


@router.post("/requests/{rid}/withdraw", response_model=AccessRequest, tags=["requests"])
def withdraw_request(rid: str, p: Portal = Depends(portal),
                     who: Principal = Depends(require(Action.REQUEST_WITHDRAW))) -> AccessRequest:
    return access.withdraw_request(p, who, rid)


@router.get("/requests", response_model=list[AccessRequest], tags=["requests"])
def list_requests(p: Portal = Depends(portal),
                  who: Principal = Depends(require(Action.REQUEST_READ))) -> list[AccessRequest]:
    return access.list_requests(p, who)


@router.get("/requests/{rid}", response_model=AccessRequest, tags=["requests"])
def get_request(rid: str, p: Portal = Depends(portal),
                who: Principal = Depends(require(Action.REQUEST_READ))) -> AccessRequest:
    return access.get_request(p, who, rid)


@router.post("/requests/{rid}/reviews", response_model=AccessRequest, tags=["reviews"])
def review_request(rid: str, body: ReviewIn, p: Portal = Depends(portal),
                   who: Principal = Depends(require(Action.REQUEST_REVIEW))) -> AccessRequest:
    return access.review_request(p, who, rid, body)


@router.get("/permits", tags=["permits"])
def list_permits(p: Portal = Depends(portal),
                 who: Principal = Depends(require(Action.PERMIT_READ))) -> list[dict[str, Any]]:
    return access.list_permits(p, who)


@router.get("/permits/revoked", tags=["permits"])
def revoked_permits(p: Portal = Depends(portal),
                    _: Principal = Depends(require(Action.PERMIT_REVOCATIONS))) -> dict[str, Any]:
    """Revoked permits, and the retired permit keys whose signatures nodes refuse."""
    return {"revoked": access.revoked_permits(p), "retired_keys": sorted(p.keys.retired)}


@router.get("/permits/{pid}", tags=["permits"])
def get_permit(pid: str, p: Portal = Depends(portal),
               who: Principal = Depends(require(Action.PERMIT_READ))) -> dict[str, Any]:
    return access.get_permit(p, who, pid)


@router.post("/permits/{pid}/revoke", tags=["permits"])
def revoke_permit(pid: str, body: RevokeIn, p: Portal = Depends(portal),
                  who: Principal = Depends(require(Action.PERMIT_REVOKE))) -> dict[str, Any]:
    return access.revoke_permit(p, who, pid, body.reason)


@router.get("/permit-keys", tags=["permits"])
def permit_keys(p: Portal = Depends(portal)) -> dict[str, Any]:
    """Public JWKS of the portal's permit keys (and, as `retired`, the ids of retired ones):
    nodes pin it at enrolment and fetch it again when a permit names a key they lack."""
    return p.keys.public_jwks()


@router.get("/apps", tags=["apps"])
def list_apps(p: Portal = Depends(portal),
              _: Principal = Depends(require(Action.APP_READ))) -> list[dict[str, Any]]:
    return access.list_apps(p)


@router.post("/apps", status_code=201, tags=["apps"])
def register_app(body: AppIn, p: Portal = Depends(portal),
                 who: Principal = Depends(require(Action.APP_REGISTER))) -> dict[str, Any]:
    return access.register_app(p, who, body)


@router.get("/transparency", tags=["public"])
def transparency(p: Portal = Depends(portal)) -> dict[str, Any]:
    """Public register of permits and refusals (no login)."""
    return access.transparency(p)
