"""One run's ServerApp, at the SuperLink: the installed app for an approved FAB hash.

Started by the SuperLink's supervisor (`federation.superlink`) ahead of need: it
loads one installed ServerApp, then waits on its stdin for the token of one
ServerApp task (never on a command line). It pulls the run's inputs, checks the
FAB exactly as a node does (`federation.apps.fab.check_fab`: a shim of an installed
app, nothing else) and runs that app's ServerApp object from this installation,
with the app's own defaults and the run's overrides as run config. A FAB that fails
the check ends the run as failed, naming why; none of its files is unpacked or
imported. The run's results go to the portal this SuperLink serves (`--portal-url`,
its TLS checked against `--portal-ca`), authenticated by the credential the portal
sealed into the run config for this SuperLink's report key: a run without one (not
submitted by the portal) is refused before its ServerApp starts.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from logging import ERROR, INFO
from pathlib import Path

from flwr.app import Message
from flwr.common import log
from flwr.common.config import get_fused_config_from_dir
from flwr.common.constant import SubStatus
from flwr.common.serde import context_from_proto, context_to_proto, fab_from_proto, run_from_proto
from flwr.proto.runtime_pb2 import PullTaskInputRequest, PushTaskOutputRequest
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.grid import HttpGrid

from access_control.run_credentials import CredentialError, ReportKey
from federation.apps.fab import FabRefused, check_fab, installed_apps, serving_fab
from federation.launch.report import CREDENTIAL_KEY, ResultsSender, reporting_to
from federation.runtime import runtime_client

REPLY_POLL_S = 0.1


class PromptGrid(HttpGrid):
    """Flower's HTTP grid, polling for replies every 0.1 s instead of every 3 s: a round
    then ends when its slowest node answers, not up to 3 s later."""

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        ids = set(self.push_messages(messages))
        end = time.time() + (timeout or 0.0)
        replies: list[Message] = []
        while ids and (timeout is None or time.time() < end):
            got = list(self.pull_messages(ids))
            replies.extend(got)
            ids.difference_update(m.metadata.reply_to_message_id for m in got)
            if ids:
                time.sleep(REPLY_POLL_S)
        return replies


@dataclass(frozen=True)
class PortalChannel:
    """Where this SuperLink's runs report: the portal's URL, the CA its TLS certificate
    must chain to (None: the system's), and the key that opens run credentials."""

    url: str
    key: ReportKey
    ca: Path | None = None

    def sender(self, sealed: str, run_id: int) -> ResultsSender:
        return ResultsSender(self.url, self.key.open(sealed), run_id,
                             verify=str(self.ca) if self.ca else True)


def run_task(address: str, token: str, portal: PortalChannel,
             root_certificates: Path | None = None) -> int:
    client = runtime_client(address, token=token, root_certificates=root_certificates)
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    context, status, details = None, SubStatus.FAILED, "the ServerApp runtime failed"
    try:
        res = client.PullTaskInput(PullTaskInputRequest())
        # Flower stamps every message it builds with the task's identity
        TaskIdentity.task_id, TaskIdentity.run_id = res.task_id, res.run.run_id
        TaskIdentity.node_id = res.context.node_id
        context, run, fab = (context_from_proto(res.context), run_from_proto(res.run),
                             fab_from_proto(res.fab))
        try:
            digest, app = check_fab(fab.content)
        except FabRefused as refusal:
            details = f"the SuperLink refused run {run.run_id}: [{refusal.code}] {refusal.reason}"
            log(ERROR, "[TRE] %s", details)
            return 1
        overrides = dict(run.override_config)
        try:
            sender = portal.sender(str(overrides.pop(CREDENTIAL_KEY, "")), run.run_id)
        except CredentialError as exc:
            details = (f"the SuperLink refused run {run.run_id}: {exc} (only the portal "
                       "starts runs)")
            log(ERROR, "[TRE] %s", details)
            return 1
        context.run_config = get_fused_config_from_dir(app.fab_dir, overrides)
        grid = PromptGrid(runtime_api_address=address, insecure=root_certificates is None,
                          root_certificates=(root_certificates.read_bytes()
                                             if root_certificates else None), token=token)
        grid.set_run(run)
        log(INFO, "[TRE] run %s: %s (FAB %s…)", run.run_id, app.app_id, digest[:12])
        try:
            with serving_fab(digest), reporting_to(sender):
                app.load("serverapp")(grid=grid, context=context)
        finally:
            grid.close()
        status, details = SubStatus.COMPLETED, ""
        return 0
    except Exception as exc:  # noqa: BLE001 - reported to the SuperLink as the run's failure
        details = f"ServerApp failed: {type(exc).__name__}: {exc}"
        log(ERROR, "[TRE] %s", details, exc_info=exc)
        return 1
    finally:
        try:
            client.PushTaskOutput(PushTaskOutputRequest(
                context=context_to_proto(context) if context else None,
                sub_status=status, details=details))
        except Exception as exc:  # noqa: BLE001 - the SuperLink may be gone
            log(ERROR, "[TRE] could not report the run's end: %s", exc)
        heartbeat.stop()
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="federation.serverapp_task")
    parser.add_argument("--runtime-address", required=True)
    parser.add_argument("--root-certificates", type=Path)
    parser.add_argument("--app-hash", default="", help="the installed app to load ahead")
    parser.add_argument("--portal-url", required=True)
    parser.add_argument("--portal-ca", type=Path)
    parser.add_argument("--report-key-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    portal = PortalChannel(args.portal_url, ReportKey.load(args.report_key_dir),
                           args.portal_ca)
    if args.app_hash in installed_apps():  # warm: imports done before a run waits on them
        installed_apps()[args.app_hash].load("serverapp")
    token = sys.stdin.readline().strip()
    if not token:
        return 0  # the supervisor stopped before handing this process a run
    return run_task(args.runtime_address, token, portal, args.root_certificates)


if __name__ == "__main__":
    sys.exit(main())
