"""OpenID Connect relying party for the web UI: authorization code + PKCE (S256).

The browser meets Keycloak's own login page; the portal exchanges the code over
the back channel with its client credentials, checks the ID token (signature,
issuer, audience, expiry, nonce) and hands the access token to the API's
`TokenValidator`, so the web UI and the API trust exactly the same tokens. When the
Keycloak session ends elsewhere (an administrator, another client), Keycloak posts a
logout token to the portal (back-channel logout), checked here the same way.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import anyio
import httpx

from access_control.tokens import RealmKeys, TokenError, realm_claims

METADATA_TTL_S = 3600.0
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_MAX_AGE_S = 300.0


class OidcError(Exception):
    """Login could not complete; the message is safe to show to the user."""


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str | None
    id_token: str | None
    access_exp: float
    refresh_exp: float | None


@dataclass(frozen=True)
class LoginStart:
    """What the portal keeps between sending the browser away and its return."""

    state: str
    nonce: str
    verifier: str

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode("ascii")).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_login() -> LoginStart:
    """Fresh state, nonce and a 64-character PKCE verifier (RFC 7636 allows 43–128)."""
    return LoginStart(secrets.token_urlsafe(24), secrets.token_urlsafe(24),
                      secrets.token_urlsafe(48))


class OidcClient:
    def __init__(self, issuer: str, client_id: str, client_secret: str | None, *,
                 keys: RealmKeys, leeway_s: int = 5, timeout_s: float = 15.0) -> None:
        """`keys`: the realm's key set, the one the API's token validator uses."""
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.leeway_s = leeway_s
        self.timeout_s = timeout_s
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self.keys = keys

    async def _get(self, url: str) -> httpx.Response:
        # A client per call: logins and refreshes are rare, and a pooled client would
        # outlive the event loop it was bound to (the app has no shutdown hook for it).
        async with httpx.AsyncClient(timeout=self.timeout_s) as http:
            return await http.get(url)

    async def metadata(self) -> dict[str, Any]:
        """The realm's discovery document, cached; its issuer must be ours."""
        if self._metadata is None or time.monotonic() - self._metadata_at > METADATA_TTL_S:
            url = f"{self.issuer}/.well-known/openid-configuration"
            try:
                resp = await self._get(url)
                resp.raise_for_status()
                meta = resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise OidcError(f"the identity provider cannot be reached: {exc}") from exc
            if meta.get("issuer") != self.issuer:
                raise OidcError("the identity provider announces another issuer")
            self._metadata, self._metadata_at = meta, time.monotonic()
        return self._metadata

    async def authorization_url(self, start: LoginStart, redirect_uri: str,
                                ui_locale: str | None = None) -> str:
        meta = await self.metadata()
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": "openid profile email",
            "state": start.state,
            "nonce": start.nonce,
            "code_challenge": start.challenge,
            "code_challenge_method": "S256",
        }
        if ui_locale:
            params["ui_locales"] = ui_locale
        return f"{meta['authorization_endpoint']}?{urlencode(params)}"

    async def end_session_url(self, id_token: str | None, post_logout_redirect_uri: str) -> str:
        """Keycloak's end-session endpoint: ends its SSO session, then comes back to us."""
        meta = await self.metadata()
        params = {"client_id": self.client_id,
                  "post_logout_redirect_uri": post_logout_redirect_uri}
        if id_token:
            params["id_token_hint"] = id_token
        return f"{meta['end_session_endpoint']}?{urlencode(params)}"

    def _client_auth(self) -> tuple[dict[str, str], dict[str, str]]:
        """client_secret_basic (RFC 6749 §2.3.1: both parts form-urlencoded)."""
        if self.client_secret is None:
            return {"client_id": self.client_id}, {}
        raw = f"{quote(self.client_id, safe='')}:{quote(self.client_secret, safe='')}"
        return {}, {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}

    async def _token_request(self, form: dict[str, str]) -> TokenSet:
        meta = await self.metadata()
        extra, headers = self._client_auth()
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as http:
                resp = await http.post(meta["token_endpoint"], data=form | extra,
                                       headers=headers)
        except httpx.HTTPError as exc:
            raise OidcError(f"the identity provider cannot be reached: {exc}") from exc
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code != 200 or "access_token" not in body:
            reason = body.get("error_description") or body.get("error") or resp.status_code
            hint = ""
            if self.client_secret is None and body.get("error") in ("unauthorized_client",
                                                                    "invalid_client"):
                hint = f" (client {self.client_id!r} is confidential: set TRE_OIDC_CLIENT_SECRET)"
            raise OidcError(f"the identity provider refused the token request: {reason}{hint}")
        now = time.time()
        refresh_in = body.get("refresh_expires_in")
        return TokenSet(
            access_token=body["access_token"],
            refresh_token=body.get("refresh_token"),
            id_token=body.get("id_token"),
            access_exp=now + float(body.get("expires_in", 60)),
            refresh_exp=now + float(refresh_in) if refresh_in else None,
        )

    async def exchange_code(self, code: str, redirect_uri: str, verifier: str) -> TokenSet:
        return await self._token_request({
            "grant_type": "authorization_code", "code": code,
            "redirect_uri": redirect_uri, "code_verifier": verifier,
        })

    async def refresh(self, refresh_token: str) -> TokenSet:
        return await self._token_request({"grant_type": "refresh_token",
                                          "refresh_token": refresh_token})

    async def _claims(self, token: str, what: str, *, exp_required: bool) -> dict[str, Any]:
        """The realm's checks, shared with the API (`access_control.tokens`), for a token
        meant for this client; among several audiences, `azp` must name this client."""
        try:
            claims = await anyio.to_thread.run_sync(functools.partial(
                realm_claims, token, self.keys, issuer=self.issuer, audience=self.client_id,
                leeway_s=self.leeway_s, exp_required=exp_required))
        except TokenError as exc:
            raise OidcError(f"{what}: {exc}") from exc
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.client_id:
            raise OidcError(f"{what} is meant for another client")
        return claims

    async def verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        """OIDC Core §3.1.3.7: signature, issuer, audience, expiry and our nonce."""
        claims = await self._claims(id_token, "ID token", exp_required=True)
        if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise OidcError("ID token does not answer this login (nonce mismatch)")
        return claims

    async def verify_logout_token(self, logout_token: str) -> dict[str, Any]:
        """OIDC Back-Channel Logout 1.0 §2.6: a realm-signed token for this client that
        carries the logout event and a session (`sid`), no nonce, and is recent."""
        claims = await self._claims(logout_token, "logout token", exp_required=False)
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
