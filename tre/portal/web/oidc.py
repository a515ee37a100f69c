"""OpenID Connect relying party for the web UI, on Authlib's Starlette client.

Authlib runs the authorization code flow with PKCE (S256): it makes the state, the
nonce and the verifier, keeps them in the server-side web session (`request.session`
is the session's `oidc` dict, set by `WebSessionMiddleware`), takes each state once,
exchanges the code with the client credentials over the back channel and checks the
ID token (signature, issuer, audience, expiry, nonce). Its keys come from the realm's
`RealmKeys`, the key set the API's `TokenValidator` uses, and the access token then
goes through that validator, so the web UI and the API trust exactly the same tokens.
When the Keycloak session ends elsewhere (an administrator, another client), Keycloak
posts a logout token to the portal (back-channel logout), checked with the same keys.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx
from authlib.integrations.base_client import MismatchingStateError
from authlib.integrations.starlette_client import OAuth, OAuthError, StarletteOAuth2App
from joserfc.errors import JoseError
from starlette.requests import Request
from starlette.responses import Response

from access_control.tokens import RealmKeys, TokenError, realm_claims

CLIENT_NAME = "keycloak"
SCOPE = "openid profile email"
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_MAX_AGE_S = 300.0


class OidcError(Exception):
    """Login could not complete; the message is safe to show to the user."""


class StaleLogin(OidcError):
    """The callback's state names no login in flight: expired, or already used."""


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str | None
    id_token: str | None
    access_exp: float
    refresh_exp: float | None

    @classmethod
    def from_response(cls, body: dict[str, Any]) -> TokenSet:
        """Keycloak's token response, with lifetimes turned into deadlines."""
        now = time.time()
        refresh_in = body.get("refresh_expires_in")
        return cls(access_token=body["access_token"], refresh_token=body.get("refresh_token"),
                   id_token=body.get("id_token"),
                   access_exp=now + float(body.get("expires_in", 60)),
                   refresh_exp=now + float(refresh_in) if refresh_in else None)


class RealmApp(StarletteOAuth2App):
    """Authlib's Starlette client for the realm, reading the realm's keys from the one
    `RealmKeys` the API's validator uses (Authlib would otherwise keep its own copy)."""

    def __init__(self, framework: Any, name: str | None = None, *, realm_keys: RealmKeys,
                 **kwargs: Any) -> None:
        super().__init__(framework, name, **kwargs)
        self.realm_keys = realm_keys

    async def fetch_jwk_set(self, force: bool = False) -> dict[str, Any]:
        """Authlib asks again with `force` when an ID token names an unknown key."""
        return await anyio.to_thread.run_sync(
            functools.partial(self.realm_keys.jwks, refresh=force))


class OidcClient:
    def __init__(self, issuer: str, client_id: str, client_secret: str | None, *,
                 keys: RealmKeys, leeway_s: int = 5, timeout_s: float = 15.0) -> None:
        """`keys`: the realm's key set, the one the API's token validator uses."""
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.leeway_s = leeway_s
        self.keys = keys
        self.app: RealmApp = OAuth().register(
            CLIENT_NAME, client_cls=RealmApp, realm_keys=keys,
            client_id=client_id, client_secret=client_secret,
            server_metadata_url=f"{self.issuer}/.well-known/openid-configuration",
            client_kwargs={"scope": SCOPE, "code_challenge_method": "S256",
                           "timeout": timeout_s})

    def _refused(self, what: str, exc: Exception) -> OidcError:
        """One message per way the identity provider can say no."""
        if isinstance(exc, httpx.HTTPError):
            return OidcError(f"the identity provider cannot be reached: {exc}")
        if isinstance(exc, OAuthError):
            hint = ""
            if self.client_secret is None and exc.error in ("unauthorized_client",
                                                            "invalid_client"):
                hint = f" (client {self.client_id!r} is confidential: set TRE_OIDC_CLIENT_SECRET)"
            return OidcError(f"the identity provider refused the {what}: "
                             f"{exc.description or exc.error}{hint}")
        return OidcError(f"the {what} was refused: {exc}")

    async def login_redirect(self, request: Request, redirect_uri: str,
                             ui_locale: str | None = None) -> Response:
        """Send the browser to Keycloak's login page; Authlib keeps the login in
        `request.session` until the callback."""
        extra = {"ui_locales": ui_locale} if ui_locale else {}
        try:
            return await self.app.authorize_redirect(request, redirect_uri, **extra)
        except (httpx.HTTPError, OAuthError) as exc:
            raise self._refused("login request", exc) from exc

    async def finish_login(self, request: Request) -> tuple[TokenSet, dict[str, Any]]:
        """The callback: Authlib takes the state (once), exchanges the code with the
        PKCE verifier and checks the ID token; returns the tokens and its claims."""
        try:
            token = await self.app.authorize_access_token(
                request, leeway=self.leeway_s, claims_options={
                    "iss": {"essential": True, "value": self.issuer},
                    "aud": {"essential": True, "value": self.client_id}})
        except MismatchingStateError as exc:
            raise StaleLogin(str(exc)) from exc
        except (httpx.HTTPError, OAuthError) as exc:
            raise self._refused("login", exc) from exc
        except (JoseError, TokenError, ValueError) as exc:
            raise self._refused("ID token", exc) from exc
        if "userinfo" not in token:
            raise OidcError("the identity provider returned no ID token")
        return TokenSet.from_response(token), dict(token["userinfo"])

    async def end_session_url(self, id_token: str | None, post_logout_redirect_uri: str) -> str:
        """Keycloak's end-session endpoint: ends its SSO session, then comes back to us.
        (Authlib's `create_logout_url` would add a state, which Keycloak hands back in the
        home page's URL, and the portal has nothing to check it against.)"""
        try:
            meta = await self.app.load_server_metadata()
        except httpx.HTTPError as exc:
            raise self._refused("logout request", exc) from exc
        params = {"client_id": self.client_id,
                  "post_logout_redirect_uri": post_logout_redirect_uri}
        if id_token:
            params["id_token_hint"] = id_token
        return f"{meta['end_session_endpoint']}?{urlencode(params)}"

    async def refresh(self, refresh_token: str) -> TokenSet:
        try:
            token = await self.app.fetch_access_token(grant_type="refresh_token",
                                                      refresh_token=refresh_token)
        except (httpx.HTTPError, OAuthError) as exc:
            raise self._refused("token request", exc) from exc
        return TokenSet.from_response(token)

    async def verify_logout_token(self, logout_token: str) -> dict[str, Any]:
        """OIDC Back-Channel Logout 1.0 §2.6: a realm-signed token for this client that
        carries the logout event and a session (`sid`), no nonce, and is recent.
        Authlib has no such check; the realm's checks are those of the API's tokens."""
        try:
            claims = await anyio.to_thread.run_sync(functools.partial(
                realm_claims, logout_token, self.keys, issuer=self.issuer,
                audience=self.client_id, leeway_s=self.leeway_s, exp_required=False))
        except TokenError as exc:
            raise OidcError(f"logout token: {exc}") from exc
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.client_id:
            raise OidcError("logout token is meant for another client")
        if BACKCHANNEL_LOGOUT_EVENT not in (claims.get("events") or {}):
            raise OidcError("logout token carries no logout event")
        if "nonce" in claims:
            raise OidcError("logout token must not carry a nonce")
        if not isinstance(claims.get("sid"), str) or not claims["sid"]:
            raise OidcError("logout token names no session")
        issued = claims.get("iat")
        if not isinstance(issued, int | float) or \
                abs(time.time() - issued) > LOGOUT_TOKEN_MAX_AGE_S:
            raise OidcError("logout token is not recent")
        return claims
