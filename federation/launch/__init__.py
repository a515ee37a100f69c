"""The run contract: the only part of the federation the portal and the CLI import.

Why one package: a run's parameters, the FABs' identity, the Control API and the
results a run sends back are what both sides of a run must agree on, so each is
defined once here (`params`, `models`, `fab`, `control`, `report`), without torch,
and the node-side apps (`federation.apps`) import them from here too.

This module starts a governed training run on a SuperLink and follows it. A run is
submitted to the SuperLink's Control API in process (`federation.launch.control`),
with the FAB built from the shim in `federation/launch/fab/` (so the app hash the
nodes see is `fab_hash()`) and the run parameters (permit included) as run-config
overrides, with the run's results credential sealed to the SuperLink. Progress,
report and model come back over the caller's results API (the portal's
`/v1/results`), which keeps them in the caller's own folder: `results_dir` here
names that folder, and never travels to the SuperLink.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.launch.control import ControlAPI, ControlError
from federation.launch.fab import FAB_DIR
from federation.launch.params import RunParams
from federation.launch.report import CREDENTIAL_KEY, REPORT, read_events


class RunError(Exception):
    """Flower refused to start the run or the run failed; the message carries Flower's words."""


class FollowStopped(Exception):
    """The follower was asked to let go (its process is shutting down); the run goes on."""


@dataclass
class RunHandle:
    run_id: int
    control: ControlAPI
    results_dir: Path


def submit_app(
    superlink: str, app_dir: Path, run_config: dict[str, Any], results_dir: str | Path, *,
    credential: str | None, insecure: bool = True,
    root_certificates: str | Path | None = None,
) -> RunHandle:
    """Submit one FAB folder with run-config overrides and the sealed results
    `credential` to the SuperLink's Control API; returns once Flower accepted it. Used
    for the training and the feasibility app alike; `results_dir` is where the caller's
    results API keeps what the run sends. (`credential` None: a run nobody can report,
    which the SuperLink's runtime refuses: what tests of hostile submissions send.)"""
    control = ControlAPI(superlink, insecure,
                         Path(root_certificates) if root_certificates else None)
    config = run_config if credential is None else {**run_config, CREDENTIAL_KEY: credential}
    try:
        return RunHandle(control.start(app_dir, config), control, Path(results_dir).resolve())
    except ControlError as exc:
        raise RunError(f"the SuperLink did not start the run: {exc}") from exc


def register_supernode(
    superlink: str, public_key: str, *, insecure: bool = True,
    root_certificates: str | Path | None = None, name: str | None = None,
) -> int:
    """Register a SuperNode's public key (OpenSSH, NIST EC) through the Control API;
    returns the node id the SuperLink assigned. A node started with that private key
    (`--auth-supernode-private-key`) activates as exactly this node id."""
    control = ControlAPI(superlink, insecure,
                         Path(root_certificates) if root_certificates else None)
    try:
        return control.register_node(public_key, name=name)
    except ControlError as exc:
        raise RunError(f"the SuperLink did not register the node: {exc}") from exc


def permit_hospitals(token: str) -> int:
    """How many hospitals the permit names (0 when it cannot be read: nodes refuse it)."""
    from access_control.permits import unverified_claims

    try:
        return len({d["node_id"] for d in unverified_claims(token).get("datasets", [])})
    except Exception:  # noqa: BLE001 - the nodes verify permits; this only sets a default
        return 0


def start_run(
    superlink: str, params: RunParams, results_dir: str | Path, *, credential: str | None,
    insecure: bool = True, root_certificates: str | Path | None = None,
) -> RunHandle:
    """Submit the run to the SuperLink's Control API; returns once Flower accepted it.
    An undecided `secagg` is decided here from the permit's hospitals (`RunParams.resolved`)."""
    params.check()
    params = params.resolved(permit_hospitals(params.permit))
    return submit_app(superlink, FAB_DIR, params.to_run_config(), results_dir,
                      credential=credential, insecure=insecure,
                      root_certificates=root_certificates)


def run_status(handle: RunHandle) -> str | None:
    """Flower's status of the run (e.g. 'running', 'finished:completed'), or None."""
    try:
        return handle.control.status(handle.run_id)
    except ControlError:
        return None


def follow_run(
    handle: RunHandle, on_event: Callable[[dict[str, Any]], None] | None = None, *,
    timeout_s: float = 3600.0, poll_s: float = 1.0, stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Call `on_event` for each progress event until the run ends; returns the report.
    Raises RunError if Flower reports the run finished without a report (it crashed), and
    FollowStopped once `stop` is set, so a closing portal lets go and a new one reattaches."""
    stop = stop or threading.Event()
    deadline = time.monotonic() + timeout_s
    offset, ended, last_check = 0, False, time.monotonic()
    while time.monotonic() < deadline:
        if stop.is_set():
            raise FollowStopped(f"stopped following run {handle.run_id}")
        events, offset = read_events(handle.results_dir, offset=offset)
        for ev in events:
            if on_event:
                on_event(ev)
            ended = ended or ev.get("event") == "end"
        if ended and (handle.results_dir / REPORT).exists():
            return json.loads((handle.results_dir / REPORT).read_text())
        if time.monotonic() - last_check > 15:
            last_check = time.monotonic()
            status = run_status(handle)
            if status and status.startswith("finished") and not ended:
                time.sleep(2)  # the last event may still be on its way
                events, offset = read_events(handle.results_dir, offset=offset)
                for ev in events:
                    if on_event:
                        on_event(ev)
                    ended = ended or ev.get("event") == "end"
                if not ended:
                    raise RunError(f"run {handle.run_id} ended as {status!r} without a report; "
                                   "see the SuperLink's log")
        stop.wait(poll_s)
    raise RunError(f"run {handle.run_id} did not finish within {timeout_s:.0f}s")


def stop_run(handle: RunHandle) -> bool:
    """Ask the SuperLink to stop the run (nodes then release unused ε on the next run end).
    Best effort: False when the SuperLink could not be reached; the portal's own record
    (which no new run ticket outlives) stays what it decided."""
    try:
        handle.control.stop(handle.run_id)
    except ControlError:
        return False
    return True
