"""Bad input gets a 4xx problem-details answer that names it, never a server error, and
nothing is stored; numbers are numbers and text is text as people read it."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.portal import bearer, request_body

pytestmark = pytest.mark.integration

PROBLEM_KEYS = {"type", "title", "status", "detail"}


def stored_requests(api) -> int:
    with api.app.state.portal.db.reader() as cur:
        return cur.execute("SELECT count(*) FROM access_request").fetchone()[0]


def send(api, keycloak, method: str, path: str, body: dict):
    """The body as raw JSON: Python's encoder writes NaN and Infinity, as a careless
    client would, and escapes an unpaired surrogate as \\ud800."""
    return api.request(method, path, content=json.dumps(body).encode(),
                       headers={**bearer(keycloak.token("alice")),
                                "Content-Type": "application/json"})


def assert_problem(resp, status: int, pointer: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert set(body) >= PROBLEM_KEYS and body["status"] == status
    assert pointer in {e["pointer"] for e in body["errors"]}, body
    assert pointer in body["detail"]
    return body


@pytest.mark.parametrize(("field", "value"), [
    ("epsilon", float("nan")), ("epsilon", float("inf")), ("epsilon", 1e400),
    ("epsilon", "8"), ("epsilon", True), ("min_hospitals", 10**30),
    ("min_hospitals", 2.0), ("title", "\ud800"), ("title", "   "),
    ("title", "trial\x00"), ("title", "evil \u202ecod.exe"), ("duration_days", "30"),
])
def test_bad_values_are_named_and_nothing_is_stored(api, keycloak, field, value):
    before = stored_requests(api)
    created = send(api, keycloak, "POST", "/v1/requests", request_body(**{field: value}))
    assert_problem(created, 422, f"/{field}")
    assert stored_requests(api) == before

    good = send(api, keycloak, "POST", "/v1/requests", request_body())
    assert good.status_code == 201, good.text
    rid = good.json()["id"]
    patched = send(api, keycloak, "PATCH", f"/v1/requests/{rid}", {field: value})
    assert_problem(patched, 422, f"/{field}")
    stored = api.get(f"/v1/requests/{rid}", headers=bearer(keycloak.token("alice"))).json()
    assert stored[field] == good.json()[field]


def test_text_is_stored_normalised(api, keycloak):
    decomposed = "Cohorte de l'hôpital".replace("ô", "o\u0302")
    resp = send(api, keycloak, "POST", "/v1/requests", request_body(title=decomposed))
    assert resp.status_code == 201 and resp.json()["title"] == "Cohorte de l'hôpital"


def test_domain_errors_and_auth_errors_have_the_same_shape(api, keycloak):
    missing = api.get("/v1/requests/req_nothing", headers=bearer(keycloak.token("alice")))
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert set(missing.json()) >= PROBLEM_KEYS and "req_nothing" in missing.json()["detail"]
    anonymous = api.get("/v1/requests")
    assert anonymous.status_code == 401 and set(anonymous.json()) >= PROBLEM_KEYS
    assert anonymous.headers.get("www-authenticate", "").lower().startswith("bearer")
