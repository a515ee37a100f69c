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
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from jwcrypto import jwk, jws
from jwcrypto.common import JWException

ID_TOKEN_ALG = "RS256"
JWKS_MIN_REFRESH_S = 10.0
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
                 leeway_s: int = 5, timeout_s: float = 15.0) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.leeway_s = leeway_s
        self.timeout_s = timeout_s
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: dict[str, jwk.JWK] = {}
        self._keys_at = 0.0

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

    async def _key(self, kid: str) -> jwk.JWK:
        if kid not in self._keys and time.monotonic() - self._keys_at > JWKS_MIN_REFRESH_S:
            meta = await self.metadata()
            try:
                resp = await self._get(meta["jwks_uri"])
                resp.raise_for_status()
                keyset = jwk.JWKSet.from_json(resp.text)
            except (httpx.HTTPError, JWException, ValueError) as exc:
                raise OidcError(f"cannot fetch the realm's signing keys: {exc}") from exc
            self._keys = {k.key_id: k for k in keyset["keys"]
                          if k.get("use", "sig") == "sig" and k.key_id}
            self._keys_at = time.monotonic()
        try:
            return self._keys[kid]
        except KeyError:
            raise OidcError("a token signed by a key the realm does not publish") from None

    async def _verify(self, token: str, what: str) -> dict[str, Any]:
        """A JWT of this realm for this client: signature, issuer, audience, expiry."""
        try:
            parsed = jws.JWS()
            parsed.deserialize(token)
            header = parsed.jose_header
        except (JWException, ValueError, TypeError) as exc:
            raise OidcError(f"malformed {what}") from exc
        if not isinstance(header, dict) or header.get("alg") != ID_TOKEN_ALG:
            raise OidcError(f"{what} algorithm is not accepted")
        key = await self._key(str(header.get("kid", "")))
        try:
            parsed.verify(key, alg=ID_TOKEN_ALG)
            claims = json.loads(parsed.payload)
        except (JWException, ValueError) as exc:
            raise OidcError(f"{what} signature is invalid") from exc
        if not isinstance(claims, dict):
            raise OidcError(f"malformed {what}")
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if claims.get("iss") != self.issuer:
            raise OidcError(f"{what} was issued by another realm")
        if self.client_id not in audiences:
            raise OidcError(f"{what} is meant for another client")
        if len(audiences) > 1 and claims.get("azp") != self.client_id:
            raise OidcError(f"{what} is meant for another client")
        return claims

    async def verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        """OIDC Core §3.1.3.7: signature, issuer, audience, expiry and our nonce."""
        claims = await self._verify(id_token, "ID token")
        if not isinstance(claims.get("exp"), int | float) or \
                time.time() > claims["exp"] + self.leeway_s:
            raise OidcError("ID token has expired")
        if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise OidcError("ID token does not answer this login (nonce mismatch)")
        return claims

    async def verify_logout_token(self, logout_token: str) -> dict[str, Any]:
        """OIDC Back-Channel Logout 1.0 §2.6: a realm-signed token for this client that
        carries the logout event and a session (`sid`), no nonce, and is recent."""
        claims = await self._verify(logout_token, "logout token")
        if BACKCHANNEL_LOGOUT_EVENT not in (claims.get("events") or {}):
            raise OidcError("logout token carries no logout event")
        if "nonce" in claims:
            raise OidcError("logout token must not carry a nonce")
        if not isinstance(claims.get("sid"), str) or not claims["sid"]:
            raise OidcError("logout token names no session")
        now = time.time()
        issued = claims.get("iat")
        if not isinstance(issued, int | float) or abs(now - issued) > LOGOUT_TOKEN_MAX_AGE_S:
            raise OidcError("logout token is not recent")
        if isinstance(claims.get("exp"), int | float) and now > claims["exp"] + self.leeway_s:
            raise OidcError("logout token has expired")
        return claims
