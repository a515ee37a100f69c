"""Following a run from the progress its results route keeps: events in order, the
report at the end, and letting go when the follower's process shuts down (the run goes on)."""

from __future__ import annotations

import threading

import pytest

from federation.launch import FollowStopped, RunHandle, follow_run
from federation.launch.control import ControlAPI
from federation.launch.report import RunFolder, event


def handle(tmp_path) -> RunHandle:
    return RunHandle(7, ControlAPI("127.0.0.1:1"), tmp_path)


def test_events_then_report(tmp_path):
    folder = RunFolder(tmp_path)
    folder.append_event(event("round", round=1))
    folder.write_report({"status": "completed"})
    folder.append_event(event("end"))
    seen: list[str] = []
    report = follow_run(handle(tmp_path), lambda ev: seen.append(ev["event"]), poll_s=0.01)
    assert report == {"status": "completed"}
    assert seen == ["round", "end"]


def test_stop_lets_go_without_waiting_for_the_run(tmp_path):
    folder = RunFolder(tmp_path)
    stop = threading.Event()
    seen: list[dict] = []

    def on_event(ev: dict) -> None:
        seen.append(ev)
        stop.set()  # the portal starts closing while round 1 is being recorded

    folder.append_event(event("round", round=1))
    with pytest.raises(FollowStopped):
        follow_run(handle(tmp_path), on_event, timeout_s=60, poll_s=5, stop=stop)
    assert [ev["round"] for ev in seen] == [1]
