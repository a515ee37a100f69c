"""The Fleet gateway never reuses a connection the SuperLink may be closing."""

from __future__ import annotations

import inspect

import pytest
import uvicorn
from flwr.superlink.cli import flower_superlink

from federation.gateway import UPSTREAM_KEEPALIVE_S

pytestmark = pytest.mark.unit


def test_idle_upstream_connections_expire_before_the_superlinks_keep_alive() -> None:
    # flower-superlink runs uvicorn with uvicorn's default keep-alive (if a Flower release
    # sets its own, this test must look at that value instead)
    assert "timeout_keep_alive" not in inspect.getsource(flower_superlink)
    upstream = uvicorn.Config(app="flwr").timeout_keep_alive
    # with a margin, so a busy machine's scheduling delays cannot close the gap
    assert upstream / 2 >= UPSTREAM_KEEPALIVE_S
