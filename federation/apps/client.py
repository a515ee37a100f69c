"""The training ClientApp: a thin Flower adapter over `federation.apps.tasks`.

Runs at a hospital's SuperNode in a fresh process per message. The node home
comes from the SuperNode's node config (`node-home`), never from the run, and
the app hash is recomputed from the FAB Flower installed for this message.
A refusal is answered with an error reply naming the hospital and the reason;
the ServerApp leaves that node out of the round.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from federation.apps.fab import running_fab_hash
from federation.apps.params import RunParams
from federation.apps.tasks import (
    NodeContext,
    audit_task,
    close_task,
    evaluate_task,
    train_task,
)
from federation.node.consent import consent_filter_for
from federation.node.enrol import checkpoint_best_effort
from federation.node.governance import Refusal

app = ClientApp()

REFUSED = 4030  # error code of a governance refusal in reply messages


def to_weights(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    """Named numpy arrays from an ArrayRecord (keys are state_dict names)."""
    return {k: v.numpy() for k, v in arrays.items()}


def to_arrays(weights: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord.from_array_dict({k: Array(np.ascontiguousarray(v))
                                        for k, v in weights.items()})


def _ctx(msg: Message, context: Context) -> NodeContext:
    home = context.node_config.get("node-home")
    if not home:
        raise Refusal("no-node-home", "this SuperNode was started without node-config node-home")
    kind = str(context.node_config.get("consent-filter", "snapshot"))
    return NodeContext(home=Path(str(home)), run_id=f"flwr-{msg.metadata.run_id}",
                       app_hash=running_fab_hash(),
                       consent_filter=lambda h: consent_filter_for(h, kind))


def _refused(msg: Message, context: Context, refusal: Refusal) -> Message:
    who = context.node_config.get("hospital-id", "node")
    return Message(Error(code=REFUSED, reason=f"{who} refused: [{refusal.code}] {refusal.reason}"),
                   reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One governed DP round on the node's consented training split."""
    try:
        params = RunParams.from_run_config(dict(context.run_config))
        config = msg.content.config_records.get("config", ConfigRecord())
        arrays = msg.content.array_records.get("arrays")
        weights = None if arrays is None else to_weights(arrays)
        out = train_task(
            _ctx(msg, context), params, server_round=int(config.get("server-round", 1)),
            weights=weights, proximal_mu=float(config.get("proximal-mu", 0.0)),
        )
    except Refusal as refusal:
        return _refused(msg, context, refusal)
    content = RecordDict({
        "arrays": to_arrays(out.weights),
        "metrics": MetricRecord(out.metrics),
        "node": ConfigRecord({"hospital-id": out.hospital_id, "dataset-id": out.dataset_id,
                              "excluded-by-consent": str(out.excluded_by_consent)}),
    })
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Aggregate metrics of the global model on the node's consented test split."""
    try:
        params = RunParams.from_run_config(dict(context.run_config))
        config = msg.content.config_records.get("config", ConfigRecord())
        metrics = evaluate_task(_ctx(msg, context), params,
                                server_round=int(config.get("server-round", 0)),
                                weights=to_weights(msg.content.array_records["arrays"]))
    except Refusal as refusal:
        return _refused(msg, context, refusal)
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


@app.query("audit")
def audit(msg: Message, context: Context) -> Message:
    """Membership-inference audit of the final model; only the attack's advantage leaves."""
    try:
        params = RunParams.from_run_config(dict(context.run_config))
        out = audit_task(_ctx(msg, context), params,
                         weights=to_weights(msg.content.array_records["arrays"]))
    except Refusal as refusal:
        return _refused(msg, context, refusal)
    hospital = str(out.pop("hospital-id"))
    return Message(content=RecordDict({"metrics": MetricRecord(out),
                                       "node": ConfigRecord({"hospital-id": hospital})}),
                   reply_to=msg)


@app.query("close")
def close(msg: Message, context: Context) -> Message:
    """The ServerApp finished: release the unused part of this run's reservation."""
    try:
        params = RunParams.from_run_config(dict(context.run_config))
        ctx = _ctx(msg, context)
        out = close_task(ctx, params)
    except Refusal as refusal:
        return _refused(msg, context, refusal)
    checkpoint_best_effort(ctx.home)  # the run's rows, pinned at the portal at once
    return Message(content=RecordDict({"metrics": MetricRecord(out)}), reply_to=msg)
