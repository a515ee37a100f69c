"""The feasibility app: a cohort count run as a Flower query, one answer per hospital.

Why a Flower run and not an HTTP call to each hospital: nodes dial out to the
SuperLink and accept no inbound connections, so the SuperLink is the only way to
reach them; and the same node selection (run config `node-map`, established at
enrolment: see `federation.node.enrol`) and the same app-by-hash rule apply.

The ServerApp sends one `query.feasibility` message to each SuperNode named in
the run's `node-map` (the portal puts there the hospitals that published a
matching dataset) and sends their answers to the portal. The ClientApp
is node-installed code: the node's gate (`federation.node.gate`) refuses unless the
FAB it was sent is this node's own feasibility FAB (by hash), and checks the
portal's feasibility ticket for this hospital, cohort and purpose (signed with the
pinned permit keys, so control of the SuperLink alone asks nothing), pulls the
consent snapshot and keeps only consented subjects, and audits the query or its
refusal; the count gets disclosure control (suppression below the node's k,
cell-key perturbation, rounding). Only disclosed values leave the node.
"""

from __future__ import annotations

import json
import time
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from federation.apps.fab import installed_apps, running_fab_hash
from federation.launch.fab import FEASIBILITY_APP_ID
from federation.launch.params import FeasibilityParams
from federation.launch.report import results_sender
from federation.node.authorisation import QueryTicket
from federation.node.consent import ConsentFilter, consent_filter_for
from federation.node.enrol import checkpoint_best_effort
from federation.node.home import NodeHome, node_session
from federation.node.query import count_cohort
from federation.node.refusal import Refusal
from tre.core.schemas import CohortFilter, Purpose

REFUSED = 4030

server = ServerApp()
client = ClientApp()


def feasibility_fab_hash() -> str:
    """The hash nodes accept for a feasibility query (their own copy of the shim, built
    once per process with the other installed apps)."""
    return next(h for h, app in installed_apps().items() if app.app_id == FEASIBILITY_APP_ID)


# -- node side ---------------------------------------------------------------------------
def answer(home: NodeHome, cohort: CohortFilter, purpose: Purpose, consent_filter: ConsentFilter,
           *, run_id: str, ticket: str, app_hash: str | None) -> dict[str, Any]:
    """Disclosed counts of the consented cohort at this node (`query.count_cohort`, the
    node's gate): this node's feasibility app (`app_hash`: the one being run) with the
    portal's feasibility ticket for exactly this query (`QueryTicket`). The snapshot
    filter pulls the portal's consent snapshot first (or refuses on a stale one)."""
    return count_cohort(home, cohort, QueryTicket(ticket, cohort, run_id, app_hash,
                                                  feasibility_fab_hash()),
                        purpose=purpose, consent_filter=consent_filter)


@client.query("feasibility")
def feasibility(msg: Message, context: Context) -> Message:
    """Answer one feasibility query with disclosed counts, or refuse (audited); then
    checkpoint the node's audit head at the portal (the query's row pinned at once)."""
    reply = _feasibility_answer(msg, context)
    home_path = context.node_config.get("node-home")
    if home_path:
        checkpoint_best_effort(Path(str(home_path)))
    return reply


def _feasibility_answer(msg: Message, context: Context) -> Message:
    who = context.node_config.get("hospital-id", "node")
    home_path = context.node_config.get("node-home")
    try:
        if not home_path:
            raise Refusal("no-node-home", "this SuperNode was started without node-home")
        query = FeasibilityParams.from_run_config(dict(context.run_config))
        kind = str(context.node_config.get("consent-filter", "snapshot"))
        with node_session(Path(str(home_path))) as home:
            result = answer(home, query.cohort_filter(), Purpose(query.purpose),
                            consent_filter_for(home, kind),
                            run_id=f"flwr-{msg.metadata.run_id}", ticket=query.ticket,
                            app_hash=running_fab_hash())
    except Refusal as refusal:
        return Message(Error(code=REFUSED, reason=f"{who} refused: [{refusal.code}] "
                             f"{refusal.reason}"), reply_to=msg)
    except ValueError as exc:  # a malformed cohort or purpose
        return Message(Error(code=REFUSED, reason=f"{who} refused: [bad-query] {exc}"),
                       reply_to=msg)
    return Message(RecordDict({"answer": ConfigRecord({"json": json.dumps(result)})}),
                   reply_to=msg)


# -- server side -------------------------------------------------------------------------
@server.main()
def main(grid: Grid, context: Context) -> None:
    """Query the mapped SuperNodes once and send their answers to the portal."""
    query = FeasibilityParams.from_run_config(dict(context.run_config))
    node_map = query.hospital_nodes()
    by_node = {n: h for h, n in node_map.items()}
    online = set(grid.get_node_ids())
    targets = sorted(by_node)
    log(INFO, "[TRE] feasibility to %s (online %s)", node_map, sorted(online))
    messages = [Message(RecordDict({"query": ConfigRecord({"cohort": query.cohort})}),
                        message_type="query.feasibility", dst_node_id=nid) for nid in targets]
    answers: dict[int, dict[str, Any]] = {}
    started = time.time()
    replies = grid.send_and_receive(messages, timeout=query.timeout) if messages else []
    for reply in replies:
        nid = int(reply.metadata.src_node_id)
        row: dict[str, Any] = {"hospital_id": by_node.get(nid), "node_id": nid}
        if reply.has_error():
            row.update(status="refused", reason=reply.error.reason)
        else:
            result = json.loads(str(reply.content.config_records["answer"]["json"]))
            if result.get("hospital_id") != row["hospital_id"]:
                # the enrolled node answered for another hospital: keep nothing of it
                named = result.get("hospital_id")
                row.update(status="refused", reason=f"answer names hospital {named!r}, "
                           f"node enrolled as {row['hospital_id']!r}")
                log(WARNING, "[TRE] %s", row["reason"])
            else:
                row.update(status="answered", result=result)
        answers[nid] = row
    for nid in targets:
        answers.setdefault(nid, {"hospital_id": by_node[nid], "node_id": nid,
                                 "status": "no-reply",
                                 "reason": "offline" if nid not in online else "timed out"})
    results_sender().report({"run_id": context.run_id, "status": "completed",
                             "seconds": time.time() - started,
                             "answers": [answers[n] for n in targets]})
