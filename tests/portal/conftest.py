"""Fixtures of the portal's tests that talk to it over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.portal import LivePortal


@pytest.fixture
def portal(keycloak, tmp_path) -> Iterator[LivePortal]:
    """A fresh portal served over HTTP for one test (nodes and the `tre` command reach it
    as they would in production)."""
    server = LivePortal(keycloak, tmp_path / "portal").start()
    yield server
    server.stop()
