"""Start a governed training run on a SuperLink and follow it (CLI and portal use this).

A run is started the way Flower documents: `flwr run <FAB folder> <connection>`
against a connection written into a private FLWR_HOME, with the run parameters
(permit included) as a run-config TOML file. The FAB is the shim in
`federation/apps/fab/`, so the app hash the nodes see is `fab_hash()`.
Progress comes back through the results folder the ServerApp writes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.apps.fab import FAB_DIR
from federation.apps.params import RunParams
from federation.apps.report import REPORT, read_events
from federation.superlink import flower_env, tool

CONNECTION = "tre"


class RunError(Exception):
    """Flower refused to start the run or the run failed; the message carries Flower's words."""


class FollowStopped(Exception):
    """The follower was asked to let go (its process is shutting down); the run goes on."""


@dataclass
class RunHandle:
    run_id: int
    superlink: str
    results_dir: Path
    flwr_home: Path

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "superlink": self.superlink,
                "results_dir": str(self.results_dir), "flwr_home": str(self.flwr_home)}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(str(v))


def write_connection(flwr_home: Path, superlink: str, *, insecure: bool = True,
                     root_certificates: str | Path | None = None) -> Path:
    """A Flower config with one SuperLink connection named `tre` (never the user's file).
    With TLS, `root_certificates` is the CA that signed the SuperLink's certificate."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    text = (f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{superlink}"\ninsecure = {"true" if insecure else "false"}\n')
    if not insecure and root_certificates:
        text += f'root-certificates = "{Path(root_certificates).resolve()}"\n'
    path.write_text(text)
    return path


def _json_out(stdout: str) -> dict[str, Any]:
    try:
        return json.loads(stdout[stdout.index("{"):])
    except ValueError:
        return {}


def submit_app(
    superlink: str, app_dir: Path, run_config: dict[str, Any], results_dir: str | Path, *,
    insecure: bool = True, root_certificates: str | Path | None = None,
    flwr_home: str | Path | None = None, timeout_s: float = 120.0,
) -> RunHandle:
    """`flwr run` one FAB folder with a run-config file; returns once Flower accepted it.
    Used for the training and the feasibility app alike."""
    results = Path(results_dir).resolve()
    results.mkdir(parents=True, exist_ok=True)
    home = Path(flwr_home) if flwr_home else results / ".flwr"
    write_connection(home, superlink, insecure=insecure, root_certificates=root_certificates)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "fab"
        shutil.copytree(app_dir, copy)  # `flwr run` may migrate files in place
        cfg = Path(tmp) / "run-config.toml"
        cfg.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in run_config.items()))
        proc = subprocess.run(
            [tool("flwr"), "run", str(copy), CONNECTION, "--format", "json",
             "--run-config", str(cfg)],
            env=flower_env(home), capture_output=True, text=True, timeout=timeout_s,
        )
    out = _json_out(proc.stdout)
    if proc.returncode != 0 or not out.get("success"):
        detail = out.get("error-message") or proc.stderr.strip() or proc.stdout.strip()
        raise RunError(f"flwr run failed: {detail}")
    return RunHandle(int(out["run-id"]), superlink, results, home)


def register_supernode(
    superlink: str, public_key: str | Path, flwr_home: str | Path, *, insecure: bool = True,
    root_certificates: str | Path | None = None, name: str | None = None,
) -> int:
    """Register a SuperNode's public key (OpenSSH, NIST EC) through the Control API;
    returns the node id the SuperLink assigned. A node started with that private key
    (`--auth-supernode-private-key`) activates as exactly this node id."""
    home = Path(flwr_home)
    write_connection(home, superlink, insecure=insecure, root_certificates=root_certificates)
    cmd = [tool("flwr"), "supernode", "register", str(public_key), CONNECTION, "--format", "json"]
    if name:
        cmd += ["--name", name]
    proc = subprocess.run(cmd, env=flower_env(home), capture_output=True, text=True, timeout=60)
    out = _json_out(proc.stdout)
    if proc.returncode != 0 or not out.get("success"):
        detail = out.get("error-message") or proc.stderr.strip() or proc.stdout.strip()
        raise RunError(f"flwr supernode register failed: {detail}")
    return int(out["node-id"])


def start_run(
    superlink: str, params: RunParams, results_dir: str | Path, *, insecure: bool = True,
    flwr_home: str | Path | None = None, timeout_s: float = 120.0,
    root_certificates: str | Path | None = None,
) -> RunHandle:
    """Submit the run to the SuperLink's Control API; returns once Flower accepted it."""
    params.check()
    results = Path(results_dir).resolve()
    params = RunParams(**{**params.__dict__, "results_dir": str(results)})
    return submit_app(superlink, FAB_DIR, params.to_run_config(), results, insecure=insecure,
                      root_certificates=root_certificates, flwr_home=flwr_home,
                      timeout_s=timeout_s)


def run_status(handle: RunHandle) -> str | None:
    """Flower's status of the run (e.g. 'running', 'finished:completed'), or None."""
    proc = subprocess.run(
        [tool("flwr"), "ls", CONNECTION, "--run-id", str(handle.run_id), "--format", "json"],
        env=flower_env(handle.flwr_home), capture_output=True, text=True, timeout=60,
    )
    try:
        data = json.loads(proc.stdout[proc.stdout.index("{"):])
        return str(data["runs"][0]["status"])
    except (ValueError, KeyError, IndexError):
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
                                   f"see `flwr log {handle.run_id}`")
        stop.wait(poll_s)
    raise RunError(f"run {handle.run_id} did not finish within {timeout_s:.0f}s")


def stop_run(handle: RunHandle) -> None:
    """Ask the SuperLink to stop the run (nodes then release unused ε on the next run end)."""
    subprocess.run([tool("flwr"), "stop", str(handle.run_id), CONNECTION],
                   env=flower_env(handle.flwr_home), capture_output=True, timeout=60)
