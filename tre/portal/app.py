"""The portal's FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import tre
from access_control.sessions import SessionCheck
from access_control.tokens import TokenValidator
from tre.core.periodic import Every
from tre.core.problems import BodySizeLimit
from tre.portal import access_log, problems
from tre.portal.context import Portal
from tre.portal.routes import (
    access,
    audit,
    catalogue,
    consent,
    feasibility,
    indicators,
    me,
    nodes,
    ops,
    outputs,
    participation,
    results,
    runs,
    synthetic,
)
from tre.portal.services import checkpoints as checkpoint_service
from tre.portal.services import runs as run_service
from tre.portal.settings import PortalSettings
from tre.portal.web import install as install_web


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
    app.include_router(me.router)
    app.include_router(participation.router)
    install_web(app, settings)  # web UI: pages, session + CSRF middleware, static files
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes,
                       larger=[(synthetic.UPLOAD_PATH, settings.max_upload_bytes),
                               (results.MODEL_PATH, settings.max_upload_bytes),
                               (audit.EXPORT_PATH, settings.max_upload_bytes)])
    return app
