"""The web session middleware: cookie → session → `request.state.principal`.

`access_control.deps.authenticated` already accepts `request.state.principal`, so
every route and page sees a logged-in browser exactly like a bearer-token client.
Tokens are refreshed here shortly before they expire; a refused refresh ends the
session. For the JSON API under /v1 the session counts only for safe methods or
when the request carries the session's CSRF token in `X-CSRF-Token`, so a cookie
alone can never change state through the API.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from access_control.tokens import Principal, RealmKeys, TokenError, TokenValidator
from tre.portal.settings import PortalSettings
from tre.portal.web.oidc import OidcClient, OidcError, TokenSet
from tre.portal.web.session import SESSION_COOKIE, CookieCodec, SessionStore, WebSession

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REFRESH_MARGIN_S = 30.0
CSRF_HEADER = "x-csrf-token"


class WebAuth:
    """Everything the web UI needs to know who the browser is; one per app."""

    def __init__(self, settings: PortalSettings, secret: bytes, keys: RealmKeys) -> None:
        self.settings = settings
        self.store = SessionStore(settings.session_idle_s)
        self.codec = CookieCodec(secret)
        secret_value = settings.oidc_client_secret
        self.oidc = OidcClient(settings.issuer_url, settings.oidc_client_id,
                               secret_value.get_secret_value() if secret_value else None,
                               keys=keys)
        self._locks: dict[str, asyncio.Lock] = {}

    def cookie_header(self, sess: WebSession | None) -> str:
        """Set-Cookie for a session (or its deletion when `sess` is None)."""
        parts = [f"{SESSION_COOKIE}={self.codec.dump(sess.id) if sess else ''}", "Path=/",
                 "HttpOnly", "SameSite=Lax"]
        if sess is None:
            parts.append("Max-Age=0")
        if self.settings.cookie_secure:
            parts.append("Secure")
        return "; ".join(parts)

    async def principal_for(self, validator: TokenValidator, tokens: TokenSet) -> Principal:
        """The same validation as the API's bearer tokens (in a thread: it may fetch JWKS)."""
        try:
            return await anyio.to_thread.run_sync(validator.validate, tokens.access_token)
        except TokenError as exc:
            raise OidcError(f"the access token was refused: {exc}") from exc

    def sign_in(self, sess: WebSession, tokens: TokenSet, principal: Principal,
                keycloak_sid: str | None = None) -> None:
        sess.keycloak_sid = keycloak_sid or sess.keycloak_sid
        sess.access_token, sess.refresh_token = tokens.access_token, tokens.refresh_token
        sess.id_token = tokens.id_token or sess.id_token
        sess.access_exp, sess.refresh_exp = tokens.access_exp, tokens.refresh_exp
        sess.principal = principal

    async def keep_fresh(self, sess: WebSession, validator: TokenValidator) -> None:
        """Refresh the access token shortly before expiry; sign out if Keycloak says no."""
        if not sess.logged_in or time.time() < sess.access_exp - REFRESH_MARGIN_S:
            return
        lock = self._locks.setdefault(sess.id, asyncio.Lock())
        async with lock:
            if time.time() < sess.access_exp - REFRESH_MARGIN_S or not sess.logged_in:
                return  # another request refreshed it while we waited
            try:
                if not sess.refresh_token:
                    raise OidcError("no refresh token")
                tokens = await self.oidc.refresh(sess.refresh_token)
                principal = await self.principal_for(validator, tokens)
                self.sign_in(sess, tokens, principal)
            except OidcError:
                sess.forget_tokens()
        self._locks.pop(sess.id, None)


@dataclass
class WebState:
    """Per-request handle on the session; the middleware writes the cookie it implies."""

    auth: WebAuth
    session: WebSession | None
    cookie_changed: bool = False
    extra_cookies: list[str] = field(default_factory=list)

    def ensure(self) -> WebSession:
        """The session, created now if the browser has none (forms need a CSRF token)."""
        if self.session is None:
            self.session = self.auth.store.create()
            self.cookie_changed = True
        return self.session

    def replace(self, sess: WebSession | None) -> None:
        """Switch to another session (login) or none (logout)."""
        if self.session is not None and (sess is None or sess.id != self.session.id):
            self.auth.store.delete(self.session.id)
        self.session = sess
        self.cookie_changed = True


def _cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope["headers"]:
        if key == b"cookie":
            jar = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a malformed cookie header is just no cookie
                continue
            if name in jar:
                return jar[name].value
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class WebSessionMiddleware:
    def __init__(self, app: ASGIApp, auth: WebAuth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sid = self.auth.codec.load(_cookie(scope, SESSION_COOKIE))
        sess = self.auth.store.get(sid) if sid else None
        had_cookie = _cookie(scope, SESSION_COOKIE) is not None
        if sess is not None and sess.logged_in:
            validator = scope["app"].state.token_validator
            await self.auth.keep_fresh(sess, validator)
        web = WebState(self.auth, sess, cookie_changed=had_cookie and sess is None)
        state = scope.setdefault("state", {})
        state["web"] = web
        scope["session"] = sess.oidc if sess is not None else {}  # Authlib's logins in flight
        if sess is not None and sess.principal is not None and self._session_counts(scope, sess):
            state["principal"] = sess.principal

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if web.cookie_changed:
                    headers.append((b"set-cookie", self.auth.cookie_header(web.session).encode()))
                headers.extend((b"set-cookie", c.encode()) for c in web.extra_cookies)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    @staticmethod
    def _session_counts(scope: Scope, sess: WebSession) -> bool:
        if _header(scope, b"authorization"):
            return False  # an API client speaks for itself
        path: str = scope["path"]
        if not path.startswith("/v1/") and path != "/v1":
            return True  # web pages check CSRF on every POST themselves
        return scope["method"] in SAFE_METHODS or sess.csrf_ok(_header(scope, CSRF_HEADER.encode()))
