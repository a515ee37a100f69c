"""A token's writes end with its Keycloak session (real Keycloak, real logout)."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures.portal import APP_HASH, APP_ID, bearer, request_body

pytestmark = pytest.mark.integration


def fresh_token(keycloak, username: str) -> str:
    """A new password-grant token (the fixture's cache would hand back the old one)."""
    resp = httpx.post(f"{keycloak.base_url}/realms/{keycloak.realm}/protocol/openid-connect/"
                      "token", data={"grant_type": "password", "client_id": "tre-cli",
                                     "username": username, "password": keycloak.demo_password,
                                     "scope": "openid"})
    resp.raise_for_status()
    return resp.json()["access_token"]


def test_after_logout_the_token_writes_nothing(make_portal, keycloak):
    api = make_portal(oidc_client_secret=keycloak.portal_client_secret,
                      session_check_ttl_s=0)
    assert api.post("/v1/apps", headers=bearer(keycloak.token("admin1")), json={
        "app_id": APP_ID, "app_hash": APP_HASH, "description": "DP-SGD image classifier"},
    ).status_code == 201
    keycloak.ensure_user("lou", roles=["researcher"])
    token = fresh_token(keycloak, "lou")
    first = api.post("/v1/requests", json=request_body(), headers=bearer(token))
    assert first.status_code == 201, first.text

    user_id = keycloak.admin.get_user_id("lou")
    keycloak.admin.user_logout(user_id)

    ended = api.post("/v1/requests", json=request_body(), headers=bearer(token))
    assert ended.status_code == 401 and "session has ended" in ended.json()["detail"]
    assert api.get(f"/v1/requests/{first.json()['id']}", headers=bearer(token)).status_code \
        == 200  # reads run out the token's short lifetime
    again = api.post("/v1/requests", json=request_body(),
                     headers=bearer(fresh_token(keycloak, "lou")))
    assert again.status_code == 201, again.text
