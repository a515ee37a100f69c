"""A client generated from the OpenAPI document works against the live portal.

`tre portal openapi` writes the document; openapi-python-client (a generator that
reads nothing but that document) builds a typed Python client from it; the client
then registers an app, files a request, reads it back, and meets a refusal, all parsed
into the document's models. A document that lies about a route, a status or a schema
breaks the generated code or its parsing here.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.portal import APP_HASH, APP_ID, request_body

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tre_client(tmp_path_factory) -> object:
    out = tmp_path_factory.mktemp("generated")
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "tre"), "portal", "openapi", "--out", str(out / "doc.json")],
                   check=True, capture_output=True, timeout=120)
    subprocess.run([str(bin_dir / "openapi-python-client"), "generate", "--path",
                    str(out / "doc.json"), "--meta", "none", "--output-path",
                    str(out / "tre_client")], check=True, capture_output=True, timeout=300)
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("tre_client")
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == "tre_client" or m.startswith("tre_client.")]:
            del sys.modules[name]


def test_a_generated_client_speaks_to_the_portal(tre_client, live_portal, keycloak) -> None:
    from tre_client import AuthenticatedClient, Client
    from tre_client.api.apps import register_app_v1_apps_post as register_app
    from tre_client.api.public import transparency_v1_transparency_get as transparency
    from tre_client.api.requests import create_request_v1_requests_post as create
    from tre_client.api.requests import get_request_v1_requests_rid_get as get
    from tre_client.models import AccessRequest, AppIn, Problem, RequestFields

    def as_user(username: str) -> AuthenticatedClient:
        return AuthenticatedClient(base_url=live_portal.url, token=keycloak.token(username),
                                   raise_on_unexpected_status=True)

    registered = register_app.sync_detailed(client=as_user("admin1"), body=AppIn.from_dict(
        {"app_id": APP_ID, "app_hash": APP_HASH, "description": "DP-SGD image classifier"}))
    assert registered.status_code in (201, 409), registered.content
    created = create.sync_detailed(client=as_user("alice"),
                                   body=RequestFields.from_dict(request_body()))
    assert created.status_code == 201 and isinstance(created.parsed, AccessRequest)
    assert created.parsed.title == request_body()["title"]
    mine = get.sync(client=as_user("alice"), rid=created.parsed.id)
    assert isinstance(mine, AccessRequest) and mine.id == created.parsed.id
    not_yours = get.sync_detailed(client=as_user("bob"), rid=created.parsed.id)
    assert not_yours.status_code == 404 and isinstance(not_yours.parsed, Problem)
    assert not_yours.parsed.status == 404
    anonymous = transparency.sync_detailed(client=Client(base_url=live_portal.url))
    assert anonymous.status_code == 200
