"""Progress events reach a plain callback and a rich progress display."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from synthetic import ProgressEvent, rich_progress
from synthetic.progress import emit

pytestmark = pytest.mark.unit


def test_rich_progress_draws_stages():
    out = io.StringIO()
    with rich_progress(Console(file=out, force_terminal=False, width=100)) as progress:
        progress(ProgressEvent("fit", 0, 1, "fitting gaussian_copula"))
        progress(ProgressEvent("fit", 1, 1, "fitted"))
        progress(ProgressEvent("sample", 500, 1000, "sampled 500 of 1000 rows"))
        progress(ProgressEvent("sample", 1000, 1000, "sampled 1000 of 1000 rows"))
    text = out.getvalue()
    assert "fit" in text and "sampled 1000 of 1000 rows" in text


def test_a_failing_listener_does_not_break_a_run():
    def broken(event: ProgressEvent) -> None:
        raise RuntimeError("display gone")

    emit(broken, "fit", 0, 1, "x")  # no exception
    seen: list[ProgressEvent] = []
    emit(seen.append, "sample", 2, 4, "half")
    assert seen == [ProgressEvent("sample", 2, 4, "half")] and not seen[0].done
