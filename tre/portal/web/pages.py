"""What every page shares: the template environment, who is looking, in which
language, the policy checks, CSRF on every POST, and HTML error pages.

Pages ask the same policy table as the API (`access_control.policy`) and call the
same service functions; nothing here knows a business rule.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape

from access_control.policy import Action, allowed_actions
from access_control.tokens import Principal
from tre.portal.context import Portal
from tre.portal.errors import DomainError
from tre.portal.web.auth import WebState
from tre.portal.web.i18n import LANG_COOKIE, N_, Translator, negotiate, translator

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
STATIC = Path(__file__).resolve().parents[1] / "static"
CSRF_FIELD = "csrf_token"


def security_headers(keycloak_url: str) -> dict[str, str]:
    """Headers of every page. Scripts and styles only from the portal itself; forms may
    post only to the portal, and a form's redirect (logout) only on to Keycloak."""
    parts = urlsplit(keycloak_url)
    keycloak = f"{parts.scheme}://{parts.netloc}"
    return {
        "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                   f"frame-ancestors 'none'; form-action 'self' {keycloak}; "
                                   "base-uri 'none'; object-src 'none'",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-store",
    }


def _fmt_dt(value: datetime | str | None) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _fmt_num(value: float | int | None, digits: int | None = None) -> str:
    """Fixed decimals when asked (days, ε); otherwise the shortest form (δ = 1e-05)."""
    if value is None:
        return "—"
    if digits is not None:
        return f"{value:.{digits}f}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES),
                      autoescape=select_autoescape(["html", "xml"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["dt"] = _fmt_dt
    env.filters["num"] = _fmt_num
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False,
                                                         sort_keys=True, default=str)
    return env


ENV = _environment()


class LoginRequired(Exception):
    """The page needs a logged-in user: send the browser to the login page."""


class PageError(Exception):
    """An error to show as an HTML page (status + a message already translated)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Ctx:
    """Who is looking at a page, in which language, and what they may do."""

    request: Request
    lang: str
    _: Translator
    user: Principal | None
    can: frozenset[str]

    @property
    def web(self) -> WebState:
        return self.request.state.web

    @property
    def portal(self) -> Portal:
        return self.request.app.state.portal

    def csrf_token(self) -> str:
        return self.web.ensure().csrf

    def allowed(self, action: Action) -> bool:
        return action.value in self.can

    def flash(self, message: str) -> None:
        """A one-shot notice shown on the next page (kept in the server-side session)."""
        self.web.ensure().flashes.append(message)

    def take_flashes(self) -> list[str]:
        sess = self.web.session
        if sess is None or not sess.flashes:
            return []
        out, sess.flashes = sess.flashes, []
        return out


def context(request: Request) -> Ctx:
    """Dependency: the page context (language from cookie or Accept-Language)."""
    lang = negotiate(request.headers.get("accept-language"), request.cookies.get(LANG_COOKIE))
    user: Principal | None = getattr(request.state, "principal", None)
    can = frozenset(a.value for a in allowed_actions(user)) if user else frozenset()
    return Ctx(request, lang, translator(lang), user, can)


def signed_in(ctx: Ctx = Depends(context)) -> Ctx:
    """Dependency: any logged-in user."""
    if ctx.user is None:
        raise LoginRequired
    return ctx


def needs(action: Action) -> Callable[..., Ctx]:
    """Dependency: a logged-in user whose roles the policy table allows `action` (else 403)."""

    def dependency(ctx: Ctx = Depends(signed_in)) -> Ctx:
        if not ctx.allowed(action):
            raise PageError(403, ctx._("Your roles do not allow this page."))
        return ctx

    dependency.action = action  # lets tests map pages to policy rows
    return dependency


async def csrf_protect(request: Request) -> None:
    """Synchroniser token: every unsafe request must echo the session's token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    token = request.headers.get("x-csrf-token")
    if token is None:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            token = value if isinstance(value, str) else None
    sess = request.state.web.session
    if sess is None or not sess.csrf_ok(token):
        raise PageError(403, "csrf")


def render(ctx: Ctx, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    """Render a page with the shared context; security headers on every page."""
    body = ENV.get_template(template).render(
        request=ctx.request, _=ctx._, lang=ctx.lang, user=ctx.user, can=ctx.can,
        csrf_token=ctx.csrf_token, csrf_field=CSRF_FIELD, flashes=ctx.take_flashes(),
        path=ctx.request.url.path, Action=Action, **values,
    )
    headers = security_headers(ctx.request.app.state.settings.keycloak_url)
    return HTMLResponse(body, status_code=status, headers=headers)


def redirect(url: str) -> RedirectResponse:
    """303 after a POST, so reloading the next page does not repeat the action."""
    return RedirectResponse(url, status_code=303)


def safe_next(value: str | None) -> str:
    """Only local paths: a login or language switch must not become an open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


STATUS_TITLES = {401: N_("Access denied"), 403: N_("Access denied"), 404: N_("Not found"),
                 409: N_("Conflict"), 422: N_("Invalid input")}
OTHER_ERROR = N_("Something went wrong")


def error_page(request: Request, status: int, message: str) -> Response:
    ctx = context(request)
    if message == "csrf":
        message = ctx._("The form was refused because its security token is missing or out "
                        "of date. Reload the page and try again.")
    title = ctx._(STATUS_TITLES.get(status, OTHER_ERROR))
    return render(ctx, "error.html", status=status, title=title, message=message)


class PageRoute(APIRoute):
    """Routes of the web UI answer HTML: a login redirect, or an error page, never JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
            except PageError as exc:
                return error_page(request, exc.status, exc.message)
            except DomainError as exc:
                return error_page(request, exc.status_code, exc.message)
            except HTTPException as exc:
                return error_page(request, exc.status_code, str(exc.detail))
            except RequestValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}"
                                     for e in exc.errors())
                return error_page(request, 422, problems)

        return page_handler


def web_router() -> APIRouter:
    """A router for pages: HTML errors, CSRF checked on every POST, hidden from OpenAPI."""
    return APIRouter(route_class=PageRoute, include_in_schema=False,
                     dependencies=[Depends(csrf_protect)])
