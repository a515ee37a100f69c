"""The portal's FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from re import Pattern

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import tre
from access_control.sessions import SessionCheck
from access_control.tokens import TokenValidator
from tre.core.periodic import Every
from tre.portal import access_log, problems
from tre.portal.context import Portal
from tre.portal.routes import (
    access,
    audit,
    catalogue,
    consent,
    feasibility,
    indicators,
    nodes,
    ops,
    outputs,
    results,
    runs,
    synthetic,
)
from tre.portal.services import checkpoints as checkpoint_service
from tre.portal.services import runs as run_service
from tre.portal.settings import PortalSettings
from tre.portal.web import install as install_web


class BodySizeLimit:
    """Refuse bodies above the limit with 413 before anything reads them into memory.

    `larger` gives paths that take files (matched on the whole path) their own limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int,
                 larger: Sequence[tuple[Pattern[str], int]] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = tuple(larger)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = next((n for pattern, n in self.larger if pattern.match(scope["path"])),
                     self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, limit)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(send, limit)

    async def _reject(self, send: Send, limit: int) -> None:
        response = problems.problem(
            413, f"request body is larger than the limit of {limit} bytes")
        await response({"type": "http"}, _no_receive, send)


class _TooLarge(Exception):
    pass


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def create_app(settings: PortalSettings | None = None) -> FastAPI:
    settings = settings or PortalSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.portal = Portal.open(settings)
        secret = settings.oidc_client_secret
        app.state.session_check = None if secret is None else SessionCheck(
            settings.issuer_url, settings.oidc_client_id, secret.get_secret_value(),
            ttl_s=settings.session_check_ttl_s)
        run_service.recover(app.state.portal)
        checkpoint_service.sign_own(app.state.portal)  # the head it starts from, published
        daily = Every(settings.checkpoint_interval_s,
                      lambda: checkpoint_service.sign_own(app.state.portal),
                      name="portal-audit-checkpoint").start()
        try:
            yield
        finally:
            daily.stop()
            app.state.portal.close()

    app = FastAPI(
        title="TRE portal",
        version=tre.__version__,
        description="Access requests, permits, consent, runs, airlock and audit of the "
        "federated trusted research environment.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.token_validator = TokenValidator(settings.issuer_url, settings.portal_audience)

    problems.install(app)  # one error shape: RFC 9457 problem details
    access_log.install(app)  # one line per request (tre.core.logging writes it)

    @app.get("/healthz", tags=["public"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(access.router)
    app.include_router(audit.router)
    app.include_router(catalogue.router)
    app.include_router(outputs.router)
    app.include_router(ops.router)
    app.include_router(consent.router)
    app.include_router(runs.router)
    app.include_router(results.router)
    app.include_router(synthetic.router)
    app.include_router(feasibility.router)
    app.include_router(nodes.router)
    app.include_router(indicators.router)
    install_web(app, settings)  # web UI: pages, session + CSRF middleware, static files
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes,
                       larger=[(synthetic.UPLOAD_PATH, settings.max_upload_bytes),
                               (results.MODEL_PATH, settings.max_upload_bytes),
                               (audit.EXPORT_PATH, settings.max_upload_bytes)])
    return app
