"""Timing helpers: a function called every `interval_s` in a daemon thread until
stopped, and the backoff of a poll.

The audit checkpoints need the first: a node and the portal sign their chain head at least
daily, even on a day with no run, so that a cut tail or a rewritten chain always
contradicts a head someone else already holds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

_log = logging.getLogger(__name__)


class Every:
    """`Every(86400, fn, name=...).start()`; `stop()` ends it (also between calls).
    A call that raises is logged and the next one still comes."""

    def __init__(self, interval_s: float, fn: Callable[[], Any], *, name: str) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval must be positive, not {interval_s}")
        self.interval_s = interval_s
        self._fn = fn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> Every:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._fn()
            except Exception as exc:  # noqa: BLE001 - a missed call is retried next time
                _log.warning("%s failed: %s", self._thread.name, exc)


class Backoff:
    """Waits that start short and grow while nothing happens: a poll answers within
    `floor_s` of activity and costs at most one request per `cap_s` when idle."""

    def __init__(self, floor_s: float, cap_s: float, factor: float = 2.0) -> None:
        if not 0 < floor_s <= cap_s or factor < 1:
            raise ValueError(f"need 0 < floor ≤ cap and factor ≥ 1, not "
                             f"{floor_s}, {cap_s}, {factor}")
        self.floor_s, self.cap_s, self.factor = floor_s, cap_s, factor
        self._next = floor_s

    def next_wait(self) -> float:
        """The wait before the next poll (each idle poll waits longer, up to the cap)."""
        wait = self._next
        self._next = min(self.cap_s, wait * self.factor)
        return wait

    def reset(self) -> None:
        """Something happened: poll promptly again."""
        self._next = self.floor_s
