"""Every protected route refuses bad tokens (401) and answers each role as the policy says."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from fastapi.routing import APIRoute
from jwcrypto import jwk, jws

from access_control.policy import Action, is_allowed
from access_control.tokens import Principal
from tests.fixtures.portal import bearer

pytestmark = pytest.mark.integration

ROLE_USERS = {
    "researcher": "alice",
    "reviewer": "rev1",
    "output_checker": "chk1",
    "steward": "steward1",
    "node_operator": "nodeop1",
    "auditor": "auditor1",
    "admin": "admin1",
}


# A hospital the node operator and node client of ROLE_USERS belong to: scope
# refusals (another hospital) are tested in test_hospital_view, not here.
PATH_VALUES = {"hospital_id": "hospital-a"}


def api_routes(routes) -> list[APIRoute]:
    """Every API route, including those of routers FastAPI includes lazily."""
    found = []
    for route in routes:
        if hasattr(route, "original_router"):
            found.extend(api_routes(route.original_router.routes))
        elif isinstance(route, APIRoute) and route.path.startswith("/v1/"):
            found.append(route)
    return found


def protected_routes(app) -> list[tuple[str, str, Action]]:
    """(method, concrete path, action) for every API route guarded by the policy table."""
    out = []
    for route in api_routes(app.routes):
        actions = [d.call.action for d in route.dependant.dependencies
                   if hasattr(d.call, "action")]
        if not actions:
            continue
        path = route.path_format
        for name in route.param_convertors:
            path = path.replace("{" + name + "}", PATH_VALUES.get(name, "does-not-exist"))
        for method in route.methods:
            out.append((method, path, actions[0]))
    return out


def call(client, method: str, path: str, headers: dict) -> httpx.Response:
    kwargs = {"json": {}} if method in {"POST", "PATCH", "PUT"} else {}
    return client.request(method, path, headers=headers, **kwargs)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _parts(token: str) -> tuple[dict, dict, str]:
    header, payload, sig = token.split(".")
    return (json.loads(base64.urlsafe_b64decode(header + "==")),
            json.loads(base64.urlsafe_b64decode(payload + "==")), sig)


@pytest.fixture(scope="module")
def bad_tokens(keycloak) -> dict[str, str]:
    good = keycloak.token("admin1")
    header, claims, sig = _parts(good)
    payload = _b64(json.dumps(claims).encode())

    none_token = f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{payload}."

    certs = httpx.get(keycloak.jwks_url).json()
    rsa = next(k for k in certs["keys"] if k["kid"] == header["kid"])
    pem = jwk.JWK(**rsa).export_to_pem()
    hs = jws.JWS(json.dumps(claims).encode())
    hs.add_signature(jwk.JWK(kty="oct", k=_b64(pem)), alg="HS256",
                     protected={"alg": "HS256", "kid": header["kid"]})
    hs256_token = hs.serialize(compact=True)

    elevated = dict(claims, realm_access={"roles": ["admin", "auditor", "reviewer"]})
    tampered = f"{good.split('.')[0]}.{_b64(json.dumps(elevated).encode())}.{sig}"
    flipped = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")

    expiring = keycloak.short_lived_token("admin1")
    time.sleep(8)  # lifespan 2 s plus the validator's 5 s leeway

    return {
        "no token": "",
        "garbage": "not-a-jwt",
        "expired": expiring,
        "wrong audience": keycloak.token("admin1", client="admin-cli"),
        "other realm": keycloak.other_realm_token(),
        "alg none": none_token,
        "HS256 with the public key as secret": hs256_token,
        "tampered payload": tampered,
        "tampered signature": flipped,
    }


def test_every_protected_route_refuses_bad_tokens(api, bad_tokens):
    routes = protected_routes(api.app)
    assert len(routes) >= 15
    for name, token in bad_tokens.items():
        headers = bearer(token) if token else {}
        for method, path, _ in routes:
            resp = call(api, method, path, headers)
            assert resp.status_code == 401, (name, method, path, resp.status_code, resp.text)
            assert resp.json()["detail"], "the 401 says why"


def test_the_good_token_is_accepted(api, keycloak):
    assert api.get("/v1/audit/verify", headers=bearer(keycloak.token("admin1"))).status_code == 200


def test_each_role_gets_the_policy_tables_answer_on_each_route(api, keycloak):
    tokens = {role: keycloak.token(user) for role, user in ROLE_USERS.items()}
    tokens["node"] = keycloak.client_token("hospital-a")
    routes = protected_routes(api.app)
    checked = 0
    for role, token in tokens.items():
        principal = Principal(subject="x", username=role, roles=frozenset({role}))
        for method, path, action in routes:
            resp = call(api, method, path, bearer(token))
            if is_allowed(principal, action):
                assert resp.status_code not in (401, 403), (role, method, path, resp.text)
            else:
                assert resp.status_code == 403, (role, method, path, resp.status_code)
                assert action.value in resp.json()["detail"]
            checked += 1
    assert checked >= 8 * 15


def test_public_routes_need_no_login(api):
    for path in ("/healthz", "/v1/transparency", "/v1/permit-keys", "/openapi.json"):
        assert api.get(path).status_code == 200, path
