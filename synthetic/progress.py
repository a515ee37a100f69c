"""Progress reporting for long steps (fit, sample, reports), decoupled from any UI.

The pipeline calls a plain callback with `ProgressEvent`s, so the CLI can draw a
rich progress bar (`rich_progress`), the portal or a node service can log or
stream them, and tests can simply collect them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

STAGES = ("prepare", "fit", "sample", "fidelity", "privacy", "gate")


@dataclass(frozen=True)
class ProgressEvent:
    """`completed` of `total` units of `stage` done; `total` None means 'unknown length'."""

    stage: str
    completed: float
    total: float | None
    message: str = ""

    @property
    def done(self) -> bool:
        return self.total is not None and self.completed >= self.total


ProgressCallback = Callable[[ProgressEvent], None]


def emit(
    progress: ProgressCallback | None,
    stage: str,
    completed: float,
    total: float | None,
    message: str = "",
) -> None:
    """Send one event if someone listens; a failing listener must not break a run."""
    if progress is None:
        return
    # A progress display is never worth a failed run.
    with suppress(Exception):
        progress(ProgressEvent(stage, completed, total, message))


@contextmanager
def rich_progress(console: object | None = None) -> Iterator[ProgressCallback]:
    """A callback drawing one rich progress bar per stage (for `tre node synthesize`)."""
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    kwargs = {"console": console} if console is not None else {}
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[stage]:<9}"),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        **kwargs,
    ) as bar:
        tasks: dict[str, int] = {}

        def callback(event: ProgressEvent) -> None:
            if event.stage not in tasks:
                tasks[event.stage] = bar.add_task(
                    event.message, total=event.total, stage=event.stage)
            task = tasks[event.stage]
            bar.update(task, completed=event.completed, total=event.total,
                       description=event.message)
            if event.done:
                bar.stop_task(task)

        yield callback
