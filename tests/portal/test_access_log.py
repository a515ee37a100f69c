"""The portal logs every request: method, route template, status, time, principal."""

from __future__ import annotations

import json
import logging

import pytest

from tests.fixtures.portal import bearer, request_body
from tre.core.logging import JsonFormatter
from tre.portal.access_log import log

pytestmark = pytest.mark.integration


def test_each_request_is_one_log_line_without_ids_or_secrets(api, keycloak, caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    token = keycloak.token("alice")
    created = api.post("/v1/requests", json=request_body(), headers=bearer(token))
    rid = created.json()["id"]
    api.get(f"/v1/requests/{rid}", headers=bearer(token))
    api.get("/v1/requests")  # no token: 401, nobody
    lines = [r for r in caplog.records if r.name == log.name]
    assert [(r.method, r.route, r.status, r.principal) for r in lines] == [
        ("POST", "/v1/requests", 201, "alice"),
        ("GET", "/v1/requests/{rid}", 200, "alice"),
        ("GET", "/v1/requests", 401, "-"),
    ]
    assert all(r.ms >= 0 for r in lines)
    text = "\n".join(r.getMessage() for r in lines)
    assert rid not in text and token not in text
    assert "GET /v1/requests/{rid} 200" in text
    as_json = json.loads(JsonFormatter().format(lines[0]))
    assert as_json["route"] == "/v1/requests" and as_json["status"] == 201
    assert as_json["principal"] == "alice"
