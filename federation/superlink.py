"""Start the federation's SuperLink: Flower's SuperLink, a Fleet-only gateway, and the
runtime that runs approved ServerApps.

Flower 1.42 serves its Fleet, Control and Runtime APIs on one HTTP address, and the
open-source Control API has no authentication: whoever reaches it can submit runs
and read every run's configuration. So the SuperLink itself listens on the control
address only (loopback by default, a private network in compose and Helm), which
the portal alone reaches; hospitals dial the Fleet gateway (`federation.gateway`)
on the published address, which forwards `/v1/fleet/…` and nothing else.

The SuperLink runs with `--isolation process`: it executes no ServerApp itself. The
supervisor here acquires each run's ServerApp task (with a secret only it and the
SuperLink hold) and starts `federation.serverapp_task` for it, which runs the
installed ServerApp for an approved FAB hash and refuses any other FAB. Runs never
install dependencies at run time (`--disable-runtime-dependency-installation`).

Results leave only towards the portal this SuperLink serves (`portal_url`), over its
API: the SuperLink's report key (created in its state folder; the public half is
`report-key.pub`, which its operator gives the portal) opens each run's credential.

`flower-superlink` spawns nothing by name in this mode, but the interpreter's
`bin/` still goes first on PATH for the `flwr` CLI the portal uses.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from logging import ERROR, INFO
from pathlib import Path


def tool(name: str) -> str:
    """Path of a console script installed beside this interpreter (falls back to PATH)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def flower_env(flwr_home: str | Path | None = None, base: dict[str, str] | None = None
               ) -> dict[str, str]:
    """Environment for Flower processes: our bin/ first on PATH, FLWR_HOME if given."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@dataclass(frozen=True)
class TLSFiles:
    """The SuperLink's TLS material (from `tre federation provision`)."""

    ca_cert: Path
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, folder: str | Path) -> TLSFiles:
        d = Path(folder)
        return cls(d / "ca.crt", d / "superlink.crt", d / "superlink.key")


def superlink_command(host: str = "127.0.0.1", port: int = 9093, *, insecure: bool = True,
                      database: str | Path | None = None, tls: TLSFiles | None = None,
                      supernode_auth: bool = False, secret_file: Path | None = None
                      ) -> list[str]:
    """The `flower-superlink` command line on the control address (all of its APIs).

    `tls`: serve its APIs over TLS. `supernode_auth`: only SuperNodes whose public key
    was registered (`flwr supernode register`) may connect, and each request must be
    signed with that key. `secret_file`: process isolation, tasks acquired with it."""
    cmd = [tool("flower-superlink"), "--host", host, "--port", str(port),
           "--disable-runtime-dependency-installation", "--isolation", "process"]
    if secret_file is not None:
        cmd += ["--superexec-auth-secret-file", str(secret_file)]
    if tls is not None:
        cmd += ["--ssl-ca-certfile", str(tls.ca_cert), "--ssl-certfile", str(tls.cert),
                "--ssl-keyfile", str(tls.key)]
    elif insecure:
        cmd.append("--insecure")
    if supernode_auth:
        cmd.append("--enable-supernode-auth")
    if database is not None:
        cmd += ["--database", str(database)]
    return cmd


def report_public_key(flwr_home: str | Path) -> str:
    """The public half of the SuperLink's report key (base64 X25519), created on first
    start: the portal seals each run's credential to it (`TRE_SUPERLINK_REPORT_KEY`)."""
    from access_control.run_credentials import ReportKey

    return ReportKey.load_or_create(flwr_home).public


def start_superlink(
    host: str = "127.0.0.1", port: int = 9092, *, portal_url: str,
    portal_ca: str | Path | None = None, control_host: str = "127.0.0.1",
    control_port: int = 9093, insecure: bool = True, flwr_home: str | Path | None = None,
    database: str | Path | None = None, log_path: str | Path | None = None,
    tls: TLSFiles | None = None, supernode_auth: bool = False,
) -> subprocess.Popen:
    """Start the SuperLink (control address), its Fleet gateway (`host:port`, what
    hospitals dial) and the ServerApp runtime reporting to `portal_url`, as one
    supervisor process in its own process group: stopping the group stops all of them
    and every ServerApp run."""
    from federation.runtime import auth_secret_file

    home = Path(flwr_home) if flwr_home else Path.cwd() / ".superlink"
    home.mkdir(parents=True, exist_ok=True)
    secret = auth_secret_file(home)
    report_public_key(home)
    link = superlink_command(control_host, control_port, insecure=insecure, database=database,
                             tls=tls, supernode_auth=supernode_auth, secret_file=secret)
    cmd = [sys.executable, "-m", "federation.superlink", "--fleet", f"{host}:{port}",
           "--control", f"{control_host}:{control_port}", "--secret-file", str(secret),
           "--portal-url", portal_url, "--report-key-dir", str(home)]
    if portal_ca is not None:
        cmd += ["--portal-ca", str(portal_ca)]
    if tls is not None:
        cmd += ["--ca-cert", str(tls.ca_cert), "--cert", str(tls.cert), "--key", str(tls.key)]
    out = open(log_path, "ab") if log_path else None  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        [*cmd, "--", *link], env=flower_env(home), stdout=out or None,
        stderr=subprocess.STDOUT if out else None, start_new_session=True,
    )


def _wait_listening(address: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as s:
            if s.connect_ex((host.strip("[]"), int(port))) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the SuperLink did not open {address}")


def _spare(control: str, ca_cert: Path | None, portal: list[str], app_hash: str = ""
           ) -> subprocess.Popen:
    """A `federation.serverapp_task` that loads the installed ServerApp of `app_hash` now
    and waits on its stdin for the token of the next run of that app: a run starts
    without interpreter start-up, and the token never shows on a command line.
    `portal`: its `--portal-url`, `--portal-ca` and `--report-key-dir` arguments."""
    cmd = [sys.executable, "-m", "federation.serverapp_task", "--runtime-address", control,
           *portal]
    if app_hash:
        cmd += ["--app-hash", app_hash]
    if ca_cert is not None:
        cmd += ["--root-certificates", str(ca_cert)]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, text=True)


def _serve_serverapps(control: str, secret_file: Path, ca_cert: Path | None,
                      portal: list[str], stop: threading.Event,
                      runs: list[subprocess.Popen]) -> None:
    """Hand each run the SuperLink queues to a warm `federation.serverapp_task` of its app
    (one spare per installed app; a FAB of any other hash gets a cold one, which refuses
    it)."""
    from flwr.common import log
    from flwr.supercore.constant import TaskType

    from federation.apps.fab import installed_apps
    from federation.runtime import acquire_task, runtime_client

    acquirer = runtime_client(control, secret_file=secret_file, root_certificates=ca_cert)
    spares = {h: _spare(control, ca_cert, portal, h) for h in installed_apps()}
    runs.extend(spares.values())
    try:
        while not stop.is_set():
            try:
                task = acquire_task(acquirer, TaskType.SERVER_APP)
            except Exception as exc:  # noqa: BLE001 - keep serving; Flower retries too
                log(ERROR, "[TRE superlink] acquiring a ServerApp task failed: %s", exc)
                stop.wait(1.0)
                continue
            if task is None:
                stop.wait(0.1)
                continue
            token, app_hash = task
            proc = spares.pop(app_hash, None) or _spare(control, ca_cert, portal)
            proc.stdin.write(token + "\n")
            proc.stdin.close()
            log(INFO, "[TRE superlink] a ServerApp task went to pid %d", proc.pid)
            if app_hash in installed_apps():
                spares[app_hash] = _spare(control, ca_cert, portal, app_hash)
            alive = {p.pid: p for p in [*runs, proc, *spares.values()] if p.poll() is None}
            runs[:] = list(alive.values())
    finally:
        acquirer.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m federation.superlink --fleet A --control B --secret-file S -- flower-superlink
    …`: start the SuperLink given after `--`, then the Fleet gateway and the ServerApp
    runtime; stop all of them on SIGTERM / SIGINT or when the SuperLink exits."""
    parser = argparse.ArgumentParser(prog="federation.superlink")
    parser.add_argument("--fleet", required=True, help="published HOST:PORT (Fleet only)")
    parser.add_argument("--control", required=True, help="the SuperLink's own HOST:PORT")
    parser.add_argument("--secret-file", type=Path, required=True)
    parser.add_argument("--ca-cert", type=Path)
    parser.add_argument("--cert", type=Path)
    parser.add_argument("--key", type=Path)
    parser.add_argument("--portal-url", required=True, help="where runs report results")
    parser.add_argument("--portal-ca", type=Path, help="CA of the portal's TLS certificate")
    parser.add_argument("--report-key-dir", type=Path, required=True)
    parser.add_argument("superlink", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    from federation.gateway import start_gateway
    from federation.runtime import stop_processes, supervised

    with supervised(args.superlink) as (link, stop):
        runs: list[subprocess.Popen] = []
        try:
            _wait_listening(args.control, link)
            gateway = start_gateway(args.fleet, args.control, ca_cert=args.ca_cert,
                                    certfile=args.cert, keyfile=args.key)
            try:
                portal = ["--portal-url", args.portal_url, "--report-key-dir",
                          str(args.report_key_dir)]
                if args.portal_ca is not None:
                    portal += ["--portal-ca", str(args.portal_ca)]
                _serve_serverapps(args.control, args.secret_file, args.ca_cert, portal, stop,
                                  runs)
            finally:
                gateway.stop()
        finally:
            stop_processes(runs)
    return link.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
