"""The bootstrapped realm against a real Keycloak: roles, audience, claims, idempotency."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from jwcrypto import jwk, jwt

from access_control.keycloak import bootstrap as kc_bootstrap
from access_control.keycloak import distribution as kc_dist
from access_control.keycloak import oidc
from access_control.keycloak import paths as kc_paths
from access_control.keycloak import realm as spec

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def verified_claims(keycloak, token: str, issuer: str | None = None) -> dict:
    """Check the signature against the realm's JWKS, as the portal will."""
    keys = jwk.JWKSet.from_json(httpx.get(keycloak.jwks_url if issuer is None else
                                          f"{issuer}/protocol/openid-connect/certs").text)
    return json.loads(jwt.JWT(jwt=token, key=keys, algs=["RS256"]).claims)


@pytest.mark.parametrize("user", spec.DEMO_USERS, ids=lambda u: u.username)
def test_each_demo_user_gets_their_roles_and_the_portal_audience(keycloak, user) -> None:
    claims = verified_claims(keycloak, keycloak.token(user.username))
    assert claims["iss"] == keycloak.issuer
    assert keycloak.audience in claims["aud"]
    assert claims["preferred_username"] == user.username
    roles = set(claims["realm_access"]["roles"]) & set(spec.ROLES)
    assert roles == set(user.roles)
    for name in spec.CLAIM_ATTRIBUTES:
        assert claims.get(name) == user.attributes.get(name)
    assert claims["sub"]


def test_stewards_carry_their_organisation(keycloak) -> None:
    assert verified_claims(keycloak, keycloak.token("steward1"))["organisation"] == "org-a"
    assert verified_claims(keycloak, keycloak.token("steward2"))["organisation"] == "org-b"


def test_node_operator_carries_the_hospital(keycloak) -> None:
    claims = verified_claims(keycloak, keycloak.token("nodeop1"))
    assert claims["hospital_id"] == "hospital-a"
    assert "node_operator" in claims["realm_access"]["roles"]


@pytest.mark.parametrize("hospital", spec.DEFAULT_HOSPITALS)
def test_node_clients_get_role_node_and_their_hospital_id(keycloak, hospital) -> None:
    claims = verified_claims(keycloak, keycloak.client_token(hospital))
    assert claims["hospital_id"] == hospital
    assert claims["azp"] == spec.node_client_id(hospital)
    assert keycloak.audience in claims["aud"]
    roles = set(claims["realm_access"]["roles"]) & set(spec.ROLES)
    assert roles == {"node"}


def test_a_wrong_node_secret_is_refused(keycloak) -> None:
    with pytest.raises(oidc.GrantError, match="unauthorized_client|invalid_client"):
        oidc.client_credentials_grant(keycloak.base_url, keycloak.realm, "node-hospital-a",
                                      keycloak.client_secret("hospital-b"))


def test_other_realm_token_is_validly_signed_by_another_issuer(keycloak) -> None:
    token = keycloak.other_realm_token()
    other_issuer = f"{keycloak.base_url}/realms/{spec.OTHER_REALM}"
    claims = verified_claims(keycloak, token, issuer=other_issuer)
    assert claims["iss"] == other_issuer and keycloak.audience in claims["aud"]
    with pytest.raises(Exception):  # noqa: B017 - jwcrypto: no key of realm tre matches
        verified_claims(keycloak, token)


def test_short_lived_tokens_expire_after_two_seconds(keycloak) -> None:
    claims = oidc.unverified_claims(keycloak.short_lived_token("alice"))
    assert claims["exp"] - claims["iat"] == spec.SHORTLIVED_LIFESPAN_S
    assert keycloak.audience in claims["aud"]


def test_users_cannot_set_their_own_hospital_id(keycloak) -> None:
    """The account API must not let nodeop1 claim another hospital."""
    token = keycloak.token("nodeop1")
    url = f"{keycloak.issuer}/account"
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    me = httpx.get(url, headers=headers)
    assert me.status_code == 200, me.text[:200]
    edited = me.json()
    edited.setdefault("attributes", {})["hospital_id"] = ["hospital-b"]
    answer = httpx.post(url, headers=headers, json=edited)
    assert answer.status_code in (204, 400, 403), answer.text[:200]
    keycloak._cache.clear()
    assert oidc.unverified_claims(keycloak.token("nodeop1"))["hospital_id"] == "hospital-a"


def test_bootstrap_twice_changes_nothing(keycloak) -> None:
    admin = kc_bootstrap.admin_client(keycloak.base_url, keycloak.server.admin_username,
                                      keycloak.server.admin_password)
    writes: list[str] = []
    for method in ("raw_post", "raw_put", "raw_delete"):
        original = getattr(admin.connection, method)

        def counting(*args, _original=original, _method=method, **kwargs):
            writes.append(f"{_method} {args[0]}")
            return _original(*args, **kwargs)

        setattr(admin.connection, method, counting)
    again = kc_bootstrap.bootstrap(admin)
    assert writes == []
    assert again == keycloak.bootstrap  # same secrets: nothing was regenerated


def test_the_portal_client_requires_pkce_and_loopback_redirects(keycloak) -> None:
    auth = f"{keycloak.issuer}/protocol/openid-connect/auth"
    params = {"client_id": spec.PORTAL_CLIENT, "response_type": "code", "scope": "openid"}
    pkce = {"code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256"}
    ok = httpx.get(auth, params={**params, **pkce, "redirect_uri": "http://127.0.0.1:5173/cb"})
    assert ok.status_code == 200 and "kc-form-login" in ok.text
    ok = httpx.get(auth, params={**params, **pkce, "redirect_uri": "http://localhost:8000/cb"})
    assert ok.status_code == 200
    evil = httpx.get(auth, params={**params, **pkce, "redirect_uri": "http://evil.example/cb"})
    assert evil.status_code == 400
    no_pkce = httpx.get(auth, params={**params, "redirect_uri": "http://127.0.0.1:5173/cb"},
                        follow_redirects=False)
    assert "code_challenge" in no_pkce.headers.get("location", "") + no_pkce.text


def test_the_committed_realm_export_is_what_the_spec_generates(keycloak) -> None:
    committed = json.loads((REPO / "deploy" / "keycloak" / "realm-tre.json").read_text())
    generated = json.loads(json.dumps(kc_bootstrap.export_realm(keycloak.admin)))
    assert committed == generated


def test_the_realm_export_imports_and_issues_good_node_tokens(keycloak) -> None:
    """Import deploy/keycloak/realm-tre.json under another name into the live server."""
    document = json.loads((REPO / "deploy" / "keycloak" / "realm-tre.json").read_text())
    name = f"tre-import-{int(time.time())}"
    document["realm"] = name
    admin = kc_bootstrap.admin_client(keycloak.base_url, keycloak.server.admin_username,
                                      keycloak.server.admin_password)
    admin.create_realm(document)
    try:
        admin.change_current_realm(name)
        cid = admin.get_client_id("node-hospital-b")
        secret = admin.get_client_secrets(cid)["value"]
        token = oidc.client_credentials_grant(keycloak.base_url, name, "node-hospital-b",
                                              secret)["access_token"]
        claims = oidc.unverified_claims(token)
        assert claims["hospital_id"] == "hospital-b" and claims["sub"]
        assert "node" in claims["realm_access"]["roles"]
        assert keycloak.audience in claims["aud"]
        # Production realm: no password grant on the CLI client, no demo users.
        assert not admin.get_client(admin.get_client_id(spec.CLI_CLIENT))[
            "directAccessGrantsEnabled"]
        assert admin.get_user_id("alice") is None
        assert admin.get_client_id(spec.SHORTLIVED_CLIENT) is None
    finally:
        admin.change_current_realm("master")
        admin.delete_realm(name)


def test_the_pinned_checksum_matches_the_cached_distribution(keycloak) -> None:
    """The zip the session's Keycloak came from is the one whose hash we pinned."""
    version, cache = kc_dist.KEYCLOAK_VERSION, kc_paths.keycloak_cache_dir()
    zip_path = cache / f"keycloak-quarkus-dist-{version}.zip"
    kc_dist.verify_checksum(zip_path, kc_dist.PINNED_SHA512[version])
    marker = cache / f"keycloak-{version}" / ".tre-verified"
    assert marker.read_text().strip() == kc_dist.PINNED_SHA512[version]
