"""The OpenAPI document is the API's contract: who may call what, and every error shape."""

from __future__ import annotations

import json

import jsonschema
import pytest
from typer.testing import CliRunner

from tests.fixtures.portal import bearer, request_body
from tre.cli.main import app as cli
from tre.portal.app import create_app
from tre.portal.settings import PortalSettings

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def doc(tmp_path_factory) -> dict:
    return create_app(PortalSettings(state_dir=tmp_path_factory.mktemp("portal"))).openapi()


def operations(doc: dict):
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            yield path, method, op


@pytest.mark.unit
def test_security_is_declared_and_public_routes_need_none(doc):
    schemes = doc["components"]["securitySchemes"]
    assert schemes["keycloak"] == {"type": "http", "scheme": "bearer",
                                   "description": "An access token of the realm's Keycloak"}
    for path, method, op in operations(doc):
        if "public" in op.get("tags", []):
            assert "security" not in op, (method, path)
        elif path.startswith("/v1/") and not path.startswith("/v1/permit-keys"):
            assert op.get("security"), (method, path)
            assert {"401", "403"} <= set(op["responses"]), (method, path)


@pytest.mark.unit
def test_every_error_is_a_documented_problem(doc):
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, method, op in operations(doc):
        for status, response in op["responses"].items():
            if int(status) >= 400:
                schema = response["content"][PROBLEM]["schema"]
                assert schema == {"$ref": "#/components/schemas/Problem"}, (method, path)
        if op.get("requestBody"):
            assert {"400", "413", "422"} <= set(op["responses"]), (method, path)
    problem = doc["components"]["schemas"]["Problem"]
    jsonschema.validate(problem["example"], problem)
    assert problem["properties"]["detail"] == {"type": "string"}


@pytest.mark.integration
def test_live_errors_match_the_document(api, keycloak, doc):
    problem = doc["components"]["schemas"]["Problem"]
    alice = bearer(keycloak.token("alice"))
    created = api.post("/v1/requests", json=request_body(), headers=alice).json()
    withdraw = f"/v1/requests/{created['id']}/withdraw"
    assert api.post(withdraw, headers=alice).status_code == 200
    answers = [
        ("/v1/requests", "post", api.post("/v1/requests", headers=alice,
                                          content=b'{"epsilon": NaN}')),
        ("/v1/requests/{rid}", "get", api.get("/v1/requests/nope", headers=alice)),
        ("/v1/requests", "get", api.get("/v1/requests")),
        ("/v1/requests/{rid}/withdraw", "post", api.post(withdraw, headers=alice)),  # 409
    ]
    for path, method, resp in answers:
        assert str(resp.status_code) in doc["paths"][path][method]["responses"], (path, resp)
        assert resp.headers["content-type"].startswith(PROBLEM)
        jsonschema.validate(resp.json(), problem)


@pytest.mark.unit
def test_tre_portal_openapi_writes_the_document(tmp_path, monkeypatch, doc):
    monkeypatch.setenv("TRE_STATE_DIR", str(tmp_path / "state"))
    out = tmp_path / "openapi.json"
    result = CliRunner().invoke(cli, ["portal", "openapi", "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert written["paths"].keys() == doc["paths"].keys()
    assert written["components"]["securitySchemes"] == doc["components"]["securitySchemes"]
