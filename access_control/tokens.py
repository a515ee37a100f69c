"""Validation of Keycloak's tokens (invariant 5), in one place for the API and the web.

Only tokens signed by the realm's current keys (JWKS, cached and refreshed when an
unknown `kid` shows up), with the algorithm pinned to RS256, issued by the realm,
for the expected audience, inside their validity window, are accepted. Anything else
raises `TokenError` with the reason; the API turns it into 401. The JOSE work is
joserfc's (what Authlib 1.9 builds on); the web login (`tre.portal.web.oidc`) has
Authlib check its ID tokens against the same `RealmKeys`: one key set.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    InvalidKeyIdError,
    JoseError,
    UnsupportedAlgorithmError,
)
from joserfc.jwk import GuestProtocol, Key, KeyParameters, KeySet

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
    """The realm's published keys (JWKS), shared by the API and the web login: fetched
    on first use, fetched again when a token names an unknown `kid` (a key rotation);
    such refetches at most every JWKS_MIN_REFRESH_S."""

    def __init__(self, jwks_url: str, *, http: httpx.Client | None = None) -> None:
        self.jwks_url = jwks_url
        self._http = http or httpx.Client(timeout=10.0)
        self._cached: tuple[dict[str, Any], KeySet] | None = None
        self._refetched_at = -JWKS_MIN_REFRESH_S
        self._lock = threading.Lock()

    def jwks(self, *, refresh: bool = False) -> dict[str, Any]:
        """The JWKS document as published (Authlib's ID-token check imports it)."""
        return self._load(refresh)[0]

    def signing_key(self, token: GuestProtocol) -> Key:
        """joserfc's key callback: the published signing key the token's `kid` names,
        looked up again after one refetch when the cached set has no such key."""
        header = token.headers()
        kid = header.get("kid")
        if not kid:
            raise InvalidKeyIdError("token names no key")
        wanted: KeyParameters = {"use": "sig", "alg": header["alg"]}
        try:
            return self._load(refresh=False)[1].get_by_kid(kid, wanted)
        except InvalidKeyIdError:
            return self._load(refresh=True)[1].get_by_kid(kid, wanted)

    def _load(self, refresh: bool) -> tuple[dict[str, Any], KeySet]:
        with self._lock:
            if self._cached is not None and not refresh:
                return self._cached
            if self._cached is not None:
                if time.monotonic() - self._refetched_at < JWKS_MIN_REFRESH_S:
                    return self._cached  # a spray of unknown kids must not hammer Keycloak
                self._refetched_at = time.monotonic()
            try:
                resp = self._http.get(self.jwks_url)
                resp.raise_for_status()
                document = resp.json()
                self._cached = document, KeySet.import_key_set(document)
            except (httpx.HTTPError, JoseError, ValueError, KeyError, TypeError) as exc:
                raise TokenError(f"cannot fetch the realm's signing keys: {exc}") from exc
            return self._cached


def _claim_problem(error: ClaimError, audience: str) -> str:
    """The reason, in the words the API has always given, for a refused claim."""
    claim = error.claim.split(",")[0]
    if isinstance(error, ExpiredTokenError):
        return "token has expired"
    return {
        "iss": "token was issued by another realm or server",
        "aud": f"token is not meant for audience {audience!r}",
        "exp": "token has no expiry",
        "nbf": "token is not valid yet",
        "iat": "token is not valid yet",
    }.get(claim, f"token claim {claim!r} is not acceptable")


def realm_claims(token: str, keys: RealmKeys, *, issuer: str, audience: str,
                 leeway_s: float, exp_required: bool = True) -> dict[str, Any]:
    """The claims of a token of this realm meant for `audience`: RS256 signature by a
    realm key, issuer, audience, expiry and not-before.
    What each kind of token adds (type, subject, event) its caller checks."""
    try:
        decoded = jwt.decode(token, keys.signing_key, algorithms=[ALLOWED_ALG])
    except UnsupportedAlgorithmError:
        alg = jws.extract_compact(token.encode()).protected.get("alg")
        raise TokenError(f"token algorithm {alg!r} is not accepted") from None
    except InvalidKeyIdError:
        raise TokenError("token signed by a key the realm does not publish") from None
    except BadSignatureError:
        raise TokenError("token signature is invalid") from None
    except (JoseError, ValueError) as exc:
        raise TokenError("malformed token") from exc
    registry = jwt.JWTClaimsRegistry(
        leeway=int(leeway_s), iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": audience}, exp={"essential": exp_required})
    try:
        registry.validate(decoded.claims)
    except ClaimError as exc:
        raise TokenError(_claim_problem(exc, audience)) from None
    return decoded.claims


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
