"""FastAPI dependencies: the bearer token becomes a `Principal`; `require` asks the policy."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from access_control.policy import Action, is_allowed
from access_control.sessions import SessionCheck, SessionUnknown
from access_control.tokens import Principal, TokenError, TokenValidator

UNAUTHORISED_HEADERS = {"WWW-Authenticate": 'Bearer realm="tre"'}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _validator(request: Request) -> TokenValidator:
    return request.app.state.token_validator


# Named in the OpenAPI document; the checks and their messages are this module's own.
KEYCLOAK_BEARER = HTTPBearer(scheme_name="keycloak", auto_error=False,
                             description="An access token of the realm's Keycloak")
RUN_CREDENTIAL = HTTPBearer(scheme_name="runCredential", auto_error=False,
                            description="The results credential the portal issued for one run")


def authenticated(request: Request,
                  _: HTTPAuthorizationCredentials | None = Depends(KEYCLOAK_BEARER)
                  ) -> Principal:
    """The caller's principal from `Authorization: Bearer …` (or the web session)."""
    principal = getattr(request.state, "principal", None)
    if principal is not None:  # set by the web UI's session middleware
        return principal
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing bearer token", headers=UNAUTHORISED_HEADERS
        )
    try:
        principal = _validator(request).validate(token.strip())
    except TokenError as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, str(exc), headers=UNAUTHORISED_HEADERS
        ) from exc
    if request.method not in SAFE_METHODS:
        _check_session(request, token.strip(), principal)
    request.state.principal = principal
    return principal


def _check_session(request: Request, token: str, principal: Principal) -> None:
    """A write needs the Keycloak session behind a user's token to be alive
    (`access_control.sessions`); without a configured check, the token's expiry rules."""
    check: SessionCheck | None = getattr(request.app.state, "session_check", None)
    if check is None or not principal.claims.get("sid"):
        return
    try:
        alive = check.alive(token)
    except SessionUnknown as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    if not alive:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "your Keycloak session has ended: "
                            "sign in again for a new token", headers=UNAUTHORISED_HEADERS)


def bearer_secret(request: Request,
                  _: HTTPAuthorizationCredentials | None = Depends(RUN_CREDENTIAL)) -> str:
    """The bearer value itself, for routes that authenticate a credential of their own
    (a run's results credential) rather than a Keycloak token."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing bearer credential",
            headers=UNAUTHORISED_HEADERS)
    return value.strip()


def require(action: Action) -> Callable[..., Principal]:
    """Dependency that admits only principals whose roles the policy table allows."""

    async def dependency(principal: Principal = Depends(authenticated)) -> Principal:
        # async: a pure check, so FastAPI need not hop to its thread pool for it
        if not is_allowed(principal, action):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"your roles do not allow {action.value}"
            )
        return principal

    dependency.__name__ = f"require_{action.name.lower()}"
    dependency.action = action  # lets tests and the web UI map routes to policy rows
    return dependency
