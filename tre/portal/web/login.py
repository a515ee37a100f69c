"""Login, logout and the language switch.

Login: /login has Authlib send the browser to Keycloak, keeping state, nonce and the
PKCE verifier in the (pre-login) session; at /auth/callback Authlib takes the state
once, exchanges the code and checks the ID token, the access token is validated like
the API's, then the session id rotates. Logout ends the portal session and then Keycloak's
(end-session endpoint with id_token_hint and post_logout_redirect_uri). A Keycloak
session ended elsewhere (an administrator, the account console) ends the portal's web
sessions too: Keycloak posts a logout token to BACKCHANNEL_LOGOUT_PATH.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import PlainTextResponse, Response

from access_control.keycloak.realm import BACKCHANNEL_LOGOUT_PATH
from tre.portal.web.auth import WebAuth
from tre.portal.web.i18n import LANG_COOKIE, LANGUAGES
from tre.portal.web.oidc import OidcError, StaleLogin
from tre.portal.web.pages import Ctx, PageError, context, redirect, safe_next, web_router

router = web_router()
backchannel = APIRouter(include_in_schema=False)  # Keycloak's calls carry no CSRF token
CALLBACK_PATH = "/auth/callback"
LANG_COOKIE_MAX_AGE = 365 * 24 * 3600
log = logging.getLogger(__name__)


def _auth(request: Request) -> WebAuth:
    return request.app.state.web_auth


def _base(request: Request) -> str:
    return request.app.state.settings.base_url.rstrip("/")


@router.get("/login")
async def login(request: Request, next: str | None = None, ctx: Ctx = Depends(context)
                ) -> Response:
    """Send the browser to Keycloak's login page (or straight on if already logged in)."""
    target = safe_next(next)
    if ctx.user is not None:
        return redirect(target)
    sess = ctx.web.ensure()
    sess.login_next = target
    request.scope["session"] = sess.oidc  # the session may be new: Authlib writes here
    try:
        return await _auth(request).oidc.login_redirect(
            request, _base(request) + CALLBACK_PATH, ui_locale=ctx.lang)
    except OidcError as exc:
        raise PageError(502, str(exc)) from exc


@router.get(CALLBACK_PATH)
async def callback(request: Request, ctx: Ctx = Depends(context)) -> Response:
    """Keycloak sends the browser back here with a code bound to our state and PKCE."""
    auth = _auth(request)
    sess = ctx.web.session
    try:
        if sess is None:
            raise StaleLogin("no session, so no login in flight")
        tokens, id_claims = await auth.oidc.finish_login(request)
        principal = await auth.principal_for(request.app.state.token_validator, tokens)
    except StaleLogin as exc:
        raise PageError(400, ctx._("This login link has expired or was already used. "
                                   "Please log in again.")) from exc
    except OidcError as exc:
        raise PageError(401, ctx._("Login failed: {reason}", reason=exc)) from exc
    fresh = auth.store.rotate(sess)
    fresh.flashes = sess.flashes
    auth.sign_in(fresh, tokens, principal, keycloak_sid=id_claims.get("sid"))
    ctx.web.replace(fresh)
    return redirect(sess.login_next)


@router.post("/logout")
async def logout(request: Request, ctx: Ctx = Depends(context)) -> Response:
    """End our session, then Keycloak's, which sends the browser back to the home page."""
    sess = ctx.web.session
    id_token = sess.id_token if sess is not None else None
    ctx.web.replace(None)
    if id_token is None:
        return redirect("/")
    try:
        url = await _auth(request).oidc.end_session_url(id_token, _base(request) + "/")
    except OidcError:
        return redirect("/")
    return redirect(url)


@router.post("/lang")
def switch_language(lang: str = Form(...), next: str = Form("/"), ctx: Ctx = Depends(context)
                    ) -> Response:
    """Remember the chosen language in a cookie (it then wins over Accept-Language)."""
    if lang not in LANGUAGES:
        raise PageError(422, ctx._("Choose one of the options."))
    response = redirect(safe_next(next))
    secure = ctx.request.app.state.settings.cookie_secure
    response.set_cookie(LANG_COOKIE, lang, max_age=LANG_COOKIE_MAX_AGE, httponly=True,
                        samesite="lax", secure=secure)
    return response


@backchannel.post(BACKCHANNEL_LOGOUT_PATH)
async def backchannel_logout(request: Request, logout_token: str = Form(...)) -> Response:
    """Keycloak ended a session: end the web sessions opened under it (OIDC Back-Channel
    Logout 1.0: 200 when done, 400 for a token we do not accept; never cached)."""
    auth = _auth(request)
    no_store = {"Cache-Control": "no-store"}
    try:
        claims = await auth.oidc.verify_logout_token(logout_token)
    except OidcError as exc:
        log.warning("back-channel logout refused: %s", exc)
        return PlainTextResponse(f"logout token refused: {exc}", 400, headers=no_store)
    ended = auth.store.end_keycloak_session(claims["sid"])
    log.info("back-channel logout: %d web session(s) ended", ended)
    return PlainTextResponse("", 200, headers=no_store)
