"""The OpenAPI document holds under generated input (Schemathesis, issue 19).

Schemathesis reads the live portal's own document (real Keycloak, real DuckDB, served
over HTTP) and sends generated requests, valid and invalid, to every operation but the
two that start Flower runs, once as each role. Each answer must be no server error,
have a status the document declares for that operation, and match the declared
schema. The number of examples per operation is bounded so the suite stays in CI's
time; a failing example is shrunk and printed by Hypothesis.
"""

from __future__ import annotations

import tempfile

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fixtures.portal import LivePortal, bearer
from tre.portal.app import create_app
from tre.portal.settings import PortalSettings

ROLES = {"researcher": "alice", "reviewer": "rev1", "output_checker": "chk1",
         "steward": "steward1", "auditor": "auditor1"}
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 12

pytestmark = pytest.mark.integration


def _document() -> dict:
    """The document as the portal's code builds it, for collection (one test per
    operation); `test_the_live_portal_serves_this_document` ties it to the live one."""
    with tempfile.TemporaryDirectory() as state:
        return create_app(PortalSettings(state_dir=state)).openapi()


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_the_live_portal_serves_this_document(live_portal: LivePortal) -> None:
    assert httpx.get(f"{live_portal.url}/openapi.json").json() == DOCUMENT


@schema.exclude(method="POST", path_regex=r"^/v1/(runs|feasibility)$").parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_every_role_gets_documented_answers(case, keycloak, live_portal) -> None:
    for username in ROLES.values():
        case.call_and_validate(base_url=live_portal.url,
                               headers=bearer(keycloak.token(username)), checks=CHECKS,
                               timeout=30)
