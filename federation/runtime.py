"""What the node runtime and the SuperLink's ServerApp runtime share: talking to a
Flower Runtime API in `--isolation process` mode.

In that mode Flower runs no app code itself: a SuperNode (or the SuperLink) queues
each message (or run) as a task on its Runtime API, and a process of the operator's
choosing acquires the task with a token, pulls its inputs and pushes the answer.
Here that process is the project's own runtime, which runs only node-installed app
objects for approved FAB hashes (`federation.apps.fab.check_fab`). Acquiring a task
is signed with a secret shared by the Flower process and its runtime only
(`--superexec-auth-secret-file`), so no other local process can take a task.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from flwr.proto.runtime_pb2 import AcquireTaskRequest
from flwr.supercore.constant import TaskType
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
    SuperExecAuthHttpInterceptor,
)
from flwr.supercore.retry import RetryInvoker, exponential
from flwr.supercore.runtime import RuntimeHttpClient

AUTH_SECRET_FILE = "superexec-auth.secret"
_ACQUIRE = frozenset({"/flwr.proto.Runtime/AcquireTask"})


def bounded_retries() -> RetryInvoker:
    """Retry transport errors briefly, then let the caller decide. (Flower's own invoker
    retries forever and answers a 401 by interrupting its process: right for a
    one-message process, wrong for a runtime that outlives many runs.)"""
    return RetryInvoker(lambda: exponential(max_delay=2.0), httpx.TransportError,
                        max_tries=5, max_time=20.0)


def auth_secret_file(folder: str | Path) -> Path:
    """A fresh random secret (owner-only file) for one Flower process and its runtime."""
    path = Path(folder) / AUTH_SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    return path


def runtime_client(address: str, *, token: str | None = None, secret_file: Path | None = None,
                   root_certificates: Path | None = None) -> RuntimeHttpClient:
    """A client of a Runtime API: with `secret_file` to acquire tasks, with `token` to
    serve one. TLS when `root_certificates` (the CA of the Runtime API's certificate)."""
    interceptors = [RuntimeVersionHttpInterceptor(component_name="tre-runtime")]
    if secret_file is not None:
        interceptors.append(SuperExecAuthHttpInterceptor(
            master_secret=Path(secret_file).read_bytes(), protected_methods=_ACQUIRE))
    if token is not None:
        interceptors.append(RuntimeTokenHttpInterceptor(token))
    return RuntimeHttpClient.from_server_address(
        server_address=address, insecure=root_certificates is None,
        root_certificates=Path(root_certificates).read_bytes() if root_certificates else None,
        interceptors=interceptors, retry_invoker=bounded_retries(),
    )


def acquire_task(client: RuntimeHttpClient, task_type: TaskType) -> tuple[str, str] | None:
    """(token, FAB hash as the task names it, "" if unnamed) of the oldest pending task of
    this type, or None when there is none. The hash only picks a warm process: the
    process still checks the FAB it pulls."""
    res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[str(task_type)]))
    if not (res.HasField("task") and res.token):
        return None
    return res.token, res.task.fab_hash if res.task.HasField("fab_hash") else ""


def stop_processes(procs: list[subprocess.Popen], timeout_s: float = 15.0) -> None:
    """Terminate, wait, and kill what did not go."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def supervised(argv: list[str]) -> Iterator[tuple[subprocess.Popen, threading.Event]]:
    """Run the Flower process given after `--` in `argv`; the event is set on SIGTERM or
    SIGINT or when that process exits, and on leaving the process is stopped."""
    command = argv[1:] if argv[:1] == ["--"] else argv
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    proc = subprocess.Popen(command)
    threading.Thread(target=lambda: (proc.wait(), stop.set()), daemon=True).start()
    try:
        yield proc, stop
    finally:
        stop_processes([proc])
