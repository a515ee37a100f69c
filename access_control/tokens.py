"""Validation of Keycloak's tokens (invariant 5), in one place for the API and the web.

Only tokens signed by the realm's current keys (JWKS, cached and refreshed when an
unknown `kid` shows up), with the algorithm pinned to RS256, issued by the realm,
for the expected audience, inside their validity window, are accepted. Anything else
raises `TokenError` with the reason; the API turns it into 401. The web login checks
its ID and logout tokens with the same `RealmKeys` and `realm_claims` (one key set).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from jwcrypto import jwk, jws
from jwcrypto.common import JWException

ALLOWED_ALG = "RS256"
JWKS_MIN_REFRESH_S = 10.0
VERIFIED_CACHE_SIZE = 4096


class TokenError(Exception):
    """The bearer token is not acceptable; the message says why (safe to show)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling, as the token says. Roles are realm roles."""

    subject: str
    username: str
    roles: frozenset[str]
    hospital_id: str | None = None
    organisation: str | None = None
    client_id: str | None = None
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def has_any(self, roles: frozenset[str]) -> bool:
        return bool(self.roles & roles)


class RealmKeys:
    """The realm's signing keys (JWKS): fetched on first use, fetched again when a token
    names an unknown `kid` (a key rotation), at most every JWKS_MIN_REFRESH_S."""

    def __init__(self, jwks_url: str, *, http: httpx.Client | None = None) -> None:
        self.jwks_url = jwks_url
        self._http = http or httpx.Client(timeout=10.0)
        self._keys: dict[str, jwk.JWK] = {}
        self._fetched_at = 0.0
        self._lock = threading.Lock()

    def _refresh(self, force: bool) -> None:
        with self._lock:
            if not force and self._keys:
                return
            if force and time.monotonic() - self._fetched_at < JWKS_MIN_REFRESH_S:
                return  # an attacker spraying unknown kids must not make us hammer Keycloak
            try:
                resp = self._http.get(self.jwks_url)
                resp.raise_for_status()
                keyset = jwk.JWKSet.from_json(resp.text)
            except (httpx.HTTPError, JWException, ValueError) as exc:
                raise TokenError(f"cannot fetch the realm's signing keys: {exc}") from exc
            self._keys = {
                k.key_id: k for k in keyset["keys"] if k.get("use", "sig") == "sig" and k.key_id
            }
            self._fetched_at = time.monotonic()

    def key(self, kid: str) -> jwk.JWK:
        self._refresh(force=False)
        if kid not in self._keys:
            self._refresh(force=True)
        try:
            return self._keys[kid]
        except KeyError:
            raise TokenError("token signed by a key the realm does not publish") from None


def realm_claims(token: str, keys: RealmKeys, *, issuer: str, audience: str,
                 leeway_s: float, exp_required: bool = True) -> dict[str, Any]:
    """The claims of a token of this realm meant for `audience`: RS256 signature by a
    realm key, issuer, audience, expiry and not-before.
    What each kind of token adds (type, subject, nonce, event) its caller checks."""
    try:
        parsed = jws.JWS()
        parsed.deserialize(token)
        header = parsed.jose_header
    except (JWException, ValueError, TypeError) as exc:
        raise TokenError("malformed token") from exc
    if not isinstance(header, dict) or header.get("alg") != ALLOWED_ALG:
        alg = header.get("alg") if isinstance(header, dict) else None
        raise TokenError(f"token algorithm {alg!r} is not accepted")
    key = keys.key(str(header.get("kid", "")))
    try:
        parsed.verify(key, alg=ALLOWED_ALG)
        claims = json.loads(parsed.payload)
    except (JWException, ValueError) as exc:
        raise TokenError("token signature is invalid") from exc
    if not isinstance(claims, dict):
        raise TokenError("malformed token")
    if claims.get("iss") != issuer:
        raise TokenError("token was issued by another realm or server")
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if audience not in audiences:
        raise TokenError(f"token is not meant for audience {audience!r}")
    now = time.time()
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if exp_required and not isinstance(exp, int | float):
        raise TokenError("token has no expiry")
    if isinstance(exp, int | float) and now > exp + leeway_s:
        raise TokenError("token has expired")
    if isinstance(nbf, int | float) and nbf > 0 and now + leeway_s < nbf:
        raise TokenError("token is not valid yet")
    return claims


class TokenValidator:
    """Bearer access tokens of the API (and of the web session, which holds one)."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        jwks_url: str | None = None,
        leeway_s: int = 5,
        http: httpx.Client | None = None,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.keys = RealmKeys(jwks_url or f"{self.issuer}/protocol/openid-connect/certs",
                              http=http)
        self.leeway_s = leeway_s
        # token → (principal, exp): a token's signature and claims never change, so a
        # repeated bearer skips the RSA check; expiry is still checked on every use.
        self._verified: dict[str, tuple[Principal, float]] = {}

    def validate(self, token: str) -> Principal:
        hit = self._verified.get(token)
        if hit is not None:
            if time.time() > hit[1] + self.leeway_s:
                self._verified.pop(token, None)
                raise TokenError("token has expired")
            return hit[0]
        principal = self._validate(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (principal, float(principal.claims["exp"]))
        return principal

    def _validate(self, token: str) -> Principal:
        claims = realm_claims(token, self.keys, issuer=self.issuer, audience=self.audience,
                              leeway_s=self.leeway_s)
        if claims.get("typ", "Bearer") != "Bearer":
            raise TokenError("not an access token")
        if not claims.get("sub"):
            raise TokenError("token has no subject")
        realm_roles = claims.get("realm_access", {}).get("roles", [])
        return Principal(
            subject=str(claims["sub"]),
            username=str(claims.get("preferred_username") or claims.get("azp") or claims["sub"]),
            roles=frozenset(str(r) for r in realm_roles),
            hospital_id=claims.get("hospital_id"),
            organisation=claims.get("organisation"),
            client_id=claims.get("azp"),
            claims=claims,
        )
