"""The timer behind the daily audit checkpoints, and the backoff of prompt polls."""

from __future__ import annotations

import threading
import time

import pytest

from tre.core.periodic import Backoff, Every

pytestmark = pytest.mark.unit


def test_calls_come_until_stopped_and_a_failing_call_does_not_end_them():
    calls: list[float] = []
    seen = threading.Event()

    def tick() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("the portal is down")
        if len(calls) >= 3:
            seen.set()

    every = Every(0.05, tick, name="test-tick").start()
    assert seen.wait(10), calls
    every.stop()
    stopped_at = len(calls)
    time.sleep(0.2)
    assert len(calls) == stopped_at


def test_a_stop_before_the_first_interval_calls_nothing():
    calls: list[int] = []
    every = Every(3600, lambda: calls.append(1), name="test-idle").start()
    every.stop()
    assert calls == []
    with pytest.raises(ValueError, match="positive"):
        Every(0, lambda: None, name="bad")


def test_backoff_grows_to_its_cap_and_resets() -> None:
    b = Backoff(0.05, 1.0)
    assert [b.next_wait() for _ in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next_wait() == 0.05
    with pytest.raises(ValueError, match="floor"):
        Backoff(2.0, 1.0)
