"""Flower's SuperNode, polling promptly while a run is active.

flwr 1.42's SuperNode loop (`flwr.supernode.start_client_internal`) waits a fixed 3 s
after every pull from the SuperLink that brought nothing, and 0.5 s at a time for its
own reply. A governed round is several exchanges (SecAgg+ adds three), so these waits,
not the nodes' work, set the pace of a run: SecAgg+ cost 1.9× a plain round on short
rounds. Flower has no option for them; the loop's only use of `time` is sleeping, so
this entry point gives that loop a clock whose idle waits back off from 50 ms to 1 s
(one pull a second at most when idle) and whose reply waits are 50 ms. Everything
else is `flower-supernode` unchanged (`python -m federation.node.supernode --help`).
"""

from __future__ import annotations

import importlib
import time
from types import ModuleType
from typing import Any

from tre.core.periodic import Backoff

FLOWER_LOOP = "flwr.supernode.start_client_internal"
FLOWER_IDLE_WAIT_S = 3.0  # the loop's wait after an empty pull (a literal in flwr 1.42)
FIRST_POLL_S = 0.05
IDLE_POLL_S = 1.0


class PromptPollClock:
    """Stands in for the `time` module inside Flower's SuperNode loop."""

    def __init__(self, first_s: float = FIRST_POLL_S, idle_s: float = IDLE_POLL_S) -> None:
        self._backoff = Backoff(first_s, idle_s)

    def sleep(self, seconds: float) -> None:
        if seconds >= FLOWER_IDLE_WAIT_S:  # nothing to do: wait longer each time
            time.sleep(self._backoff.next_wait())
            return
        # waiting for this node's own reply: a run is active, so pull promptly after it
        self._backoff.reset()
        time.sleep(min(seconds, self._backoff.floor_s))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def install_prompt_poll() -> ModuleType:
    """Give Flower's SuperNode loop the prompt clock; returns the loop's module."""
    loop = importlib.import_module(FLOWER_LOOP)
    loop.time = PromptPollClock()  # type: ignore[attr-defined]
    return loop


def main() -> None:
    """`flower-supernode`, with the prompt clock (arguments as Flower's)."""
    from flwr.supernode.cli import flower_supernode

    install_prompt_poll()
    flower_supernode()


if __name__ == "__main__":
    main()
