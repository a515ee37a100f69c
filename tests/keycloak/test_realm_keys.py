"""The realm's key set as the API's validator keeps it, against the real Keycloak: a
token naming a key the realm does not publish is refused after one refetch of the
JWKS, and a spray of such tokens makes no further request to Keycloak."""

from __future__ import annotations

import time

import httpx
import pytest
from joserfc import jws, jwt
from joserfc.jwk import RSAKey

from access_control.tokens import TokenError, TokenValidator

pytestmark = pytest.mark.integration


def counting_validator(keycloak) -> tuple[TokenValidator, list[str]]:
    """A validator of the realm whose HTTP client notes every URL it fetches."""
    fetched: list[str] = []
    http = httpx.Client(timeout=10, event_hooks={
        "request": [lambda request: fetched.append(str(request.url))]})
    return TokenValidator(keycloak.issuer, keycloak.audience, http=http), fetched


def forged(keycloak, kid: str) -> str:
    """The claims of a good token, signed by a key of our own under `kid`."""
    now = int(time.time())
    claims = {"iss": keycloak.issuer, "aud": keycloak.audience, "sub": "mallory",
              "typ": "Bearer", "iat": now, "exp": now + 300,
              "realm_access": {"roles": ["admin"]}}
    return jwt.encode({"alg": "RS256", "kid": kid}, claims, RSAKey.generate_key(2048))


def test_an_unknown_key_is_refused_after_one_refetch(keycloak) -> None:
    validator, fetched = counting_validator(keycloak)
    with pytest.raises(TokenError, match="key the realm does not publish"):
        validator.validate(forged(keycloak, "not-a-realm-key"))
    assert fetched == [keycloak.jwks_url] * 2, "first fetch, then one refetch"
    for kid in ("another-unknown-key", "and-another"):  # a spray: no more requests
        with pytest.raises(TokenError, match="key the realm does not publish"):
            validator.validate(forged(keycloak, kid))
    with pytest.raises(TokenError, match="key the realm does not publish"):
        validator.validate(keycloak.other_realm_token())  # Keycloak-signed, other realm
    assert len(fetched) == 2
    assert validator.validate(keycloak.token("alice")).username == "alice"
    assert len(fetched) == 2, "the realm's own key was in the set already"


def test_a_known_kid_on_a_foreign_signature_is_refused(keycloak) -> None:
    validator, fetched = counting_validator(keycloak)
    realm_kid = jws.extract_compact(keycloak.token("alice").encode()).protected["kid"]
    with pytest.raises(TokenError, match="signature is invalid"):
        validator.validate(forged(keycloak, realm_kid))
    assert fetched == [keycloak.jwks_url], "a published kid needs no refetch"
