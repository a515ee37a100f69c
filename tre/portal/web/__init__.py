"""The web portal: server-rendered pages over the same services and policy as the API.

`install(app)` adds the session middleware, the static files and the page routers.
Login is OIDC authorization code + PKCE against Keycloak (`login.py`); every POST
carries a CSRF synchroniser token (`pages.csrf_protect`); pages speak English and
French (`i18n.py`, from the gettext catalogues under `locale/`).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from tre.portal.settings import PortalSettings
from tre.portal.web import catalogue, consents, feasibility, login, me, outputs, runs, views
from tre.portal.web.auth import WebAuth, WebSessionMiddleware
from tre.portal.web.pages import STATIC
from tre.portal.web.session import load_or_create_secret

log = logging.getLogger(__name__)


def install(app: FastAPI, settings: PortalSettings) -> None:
    """Mount the web UI on the portal app (call once, in `create_app`)."""
    auth = WebAuth(settings, load_or_create_secret(settings),
                   keys=app.state.token_validator.keys)  # one key set for API and web
    app.state.web_auth = auth
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # imported here, not at the top: `python -m tre.portal.web.vendor` imports this
    # package first, and must not find its own module already loaded
    from tre.portal.web import vendor

    if settings.pseudonymiser_url and (absent := vendor.missing()):
        # the identifier widget says so too, in the steward's page
        log.warning("the identifier widget cannot work: %s not in %s; run `python -m "
                    "tre.portal.web.vendor` (scripts/ensure-venv does)", ", ".join(absent),
                    vendor.VENDOR)
    for module in (login, views, catalogue, feasibility, outputs, consents, runs, me):
        app.include_router(module.router)
    app.include_router(login.backchannel)
    app.add_middleware(WebSessionMiddleware, auth=auth)
