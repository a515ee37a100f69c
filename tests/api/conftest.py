"""The live portal the API tests call over HTTP (real Keycloak, real DuckDB)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.portal import LivePortal


@pytest.fixture(scope="module")
def live_portal(keycloak, tmp_path_factory) -> Iterator[LivePortal]:
    with LivePortal(keycloak, tmp_path_factory.mktemp("api-portal"),
                    oidc_client_secret=keycloak.portal_client_secret) as live:
        yield live
