"""The SuperNode entry's prompt clock, against the Flower loop it is made for."""

from __future__ import annotations

import inspect
import time

import pytest

from federation.node.supernode import (
    FLOWER_IDLE_WAIT_S,
    PromptPollClock,
    install_prompt_poll,
)

pytestmark = pytest.mark.unit


def test_flower_loop_waits_through_time_sleep_so_the_clock_applies() -> None:
    """If a Flower release stops waiting `time.sleep(3)` after an empty pull, this
    entry point no longer shortens anything: fail so that it is revisited."""
    loop = install_prompt_poll()
    assert isinstance(loop.time, PromptPollClock)
    source = inspect.getsource(loop)
    assert f"time.sleep({FLOWER_IDLE_WAIT_S:g})" in source
    assert "time.sleep(0.5)" in source


def test_idle_waits_back_off_and_a_reply_wait_makes_polling_prompt(
        monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    clock = PromptPollClock(first_s=0.05, idle_s=1.0)
    for _ in range(7):
        clock.sleep(FLOWER_IDLE_WAIT_S)
    assert slept == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    slept.clear()
    clock.sleep(0.5)  # the loop waiting for its own reply: a run is active
    clock.sleep(FLOWER_IDLE_WAIT_S)
    assert slept == [0.05, 0.05]
    assert clock.monotonic() <= time.monotonic()  # everything else is the time module
