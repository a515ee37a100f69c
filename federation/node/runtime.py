"""The node runtime: the only process that executes app code at a hospital.

`tre node serve` starts this process; it starts the Flower SuperNode with
`--isolation process` as its child, so Flower itself runs no ClientApp. For every
message the SuperNode queues, the runtime acquires the task (signed with a secret
only it and its SuperNode hold), hashes the FAB that came with it and:

- refuses, audits (`app.refused`, with the FAB's hash and files) and answers an
  error when the FAB carries any file of its own or hashes to no app installed
  here: nothing of it is unpacked, imported or installed;
- otherwise calls the node-installed app object for that hash
  (`federation.apps.fab.installed_apps`), whose governance checks the permit, the
  portal's run ticket, consent and the ε ledger as before.

It stays up between messages, so torch, Opacus and the node's code load once per
node rather than once per message. A SIGTERM stops the SuperNode and the runtime.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import threading
from logging import ERROR, INFO
from pathlib import Path

from flwr.app import Context, Error, Message
from flwr.common import log
from flwr.common.config import get_fused_config_from_dir
from flwr.common.constant import ErrorCode, SubStatus
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supernode.runtime.run_clientapp import (
    pull_task_input,
    push_message,
    push_task_output,
)

from federation.apps.fab import FabRefused, check_fab, installed_apps, serving_fab
from federation.node.enrol import CHECKPOINT_INTERVAL_S, checkpoint_best_effort
from federation.node.home import node_session
from federation.runtime import acquire_task, runtime_client, supervised
from tre.core.audit import AuditAction
from tre.core.periodic import Every

REFUSED = 4030  # the error code of every refusal a node answers
POLL_S = 0.05


def audit_refused_fab(home: Path, refusal: FabRefused, *, run_id: int) -> None:
    """The node's own record of a FAB it would not run (its hash and listing)."""
    with node_session(home) as h:
        h.audit.record(actor=h.actor, action=AuditAction.APP_REFUSED, object_type="run",
                       object_id=f"flwr-{run_id}",
                       details={"code": refusal.code, "reason": refusal.reason,
                                "fab_hash": refusal.fab_hash, "files": refusal.files[:50]})


def serve_task(address: str, token: str, home: Path, *,
               root_certificates: Path | None = None) -> str:
    """Serve one queued message; returns what became of it (for the log)."""
    client = runtime_client(address, token=token, root_certificates=root_certificates)
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    context: Context | None = None
    status, details = SubStatus.FAILED, "the node runtime failed"
    try:
        message, context, run, fab = pull_task_input(client)
        hospital = context.node_config.get("hospital-id", "node")
        try:
            digest, app = check_fab(fab.content)
        except FabRefused as refusal:
            audit_refused_fab(home, refusal, run_id=run.run_id)
            reply = Message(Error(code=REFUSED, reason=f"{hospital} refused: [{refusal.code}] "
                                  f"{refusal.reason}"), reply_to=message)
            outcome = f"refused FAB {refusal.fab_hash[:12]} ({refusal.code})"
        else:
            # the run config is this node's own defaults with the run's overrides
            context.run_config = get_fused_config_from_dir(app.fab_dir, run.override_config)
            try:
                with serving_fab(digest):
                    reply = app.load("clientapp")(message=message, context=context)
                outcome = f"{app.app_id} {message.metadata.message_type}"
            except Exception as exc:  # noqa: BLE001 - answered, so the round does not wait
                log(ERROR, "[TRE runtime] %s raised", app.app_id, exc_info=exc)
                reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                      reason=f"{hospital}: {type(exc).__name__}: {exc}"),
                                reply_to=message)
                outcome = f"{app.app_id} failed: {exc}"
        push_message(client, reply, context)
        status, details = SubStatus.COMPLETED, ""
        return outcome
    except Exception as exc:
        details = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        push_task_output(client, context, status, details)
        heartbeat.stop()
        client.close()


def serve_tasks(address: str, secret_file: Path, home: Path, stop: threading.Event, *,
                root_certificates: Path | None = None) -> None:
    """Acquire and serve the SuperNode's tasks one at a time until `stop` is set (the
    SuperNode itself hands over one message at a time)."""
    acquirer = runtime_client(address, secret_file=secret_file,
                              root_certificates=root_certificates)
    try:
        while not stop.is_set():
            try:
                task = acquire_task(acquirer, TaskType.CLIENT_APP)
            except Exception as exc:  # noqa: BLE001 - the SuperNode may still be starting
                log(INFO, "[TRE runtime] waiting for the SuperNode: %s", exc)
                stop.wait(1.0)
                continue
            if task is None:
                stop.wait(POLL_S)
                continue
            try:
                log(INFO, "[TRE runtime] %s", serve_task(address, task[0], home,
                                                         root_certificates=root_certificates))
            except Exception as exc:  # noqa: BLE001 - one bad task must not stop the node
                log(ERROR, "[TRE runtime] task failed: %s", exc, exc_info=exc)
    finally:
        acquirer.close()


def warm_up() -> None:
    """Load the installed apps and the training stack (torch, Opacus) once, while the
    SuperNode connects, so that no run's first message waits for them."""
    for app in installed_apps().values():
        app.load("clientapp")
    importlib.import_module("federation.training.dp")


def main(argv: list[str] | None = None) -> int:
    """`python -m federation.node.runtime --home H --runtime-address A --secret-file S --
    flower-supernode …`: start the SuperNode given after `--`, serve its tasks, and stop
    both on SIGTERM / SIGINT or when the SuperNode exits."""
    parser = argparse.ArgumentParser(prog="federation.node.runtime")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--runtime-address", required=True)
    parser.add_argument("--secret-file", type=Path, required=True)
    parser.add_argument("supernode", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    with supervised(args.supernode) as (supernode, stop):
        daily = Every(CHECKPOINT_INTERVAL_S, lambda: checkpoint_best_effort(args.home),
                      name="node-audit-checkpoint").start()
        try:
            warm_up()
            serve_tasks(args.runtime_address, args.secret_file, args.home, stop)
        finally:
            daily.stop()
    return supernode.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
