"""The training ClientApp: a thin Flower adapter over `federation.apps.tasks`.

Runs at a hospital's SuperNode in a fresh process per message. The node home
comes from the SuperNode's node config (`node-home`), never from the run, and
the app hash is recomputed from the FAB Flower installed for this message.
A refusal is answered with an error reply naming the hospital and the reason;
the ServerApp leaves that node out of the round.

Secure aggregation: a training message that carries SecAgg+ configs goes through
Flower's `secaggplus_mod`, which answers its key-exchange stages itself and, at the
collect stage, calls the train handler with legacy FitIns-shaped content and masks
the FitRes-shaped reply's weights before anything leaves. The handler converts at
this adapter and calls the same `train_task`, so every governance step is the same;
a refusal there is answered exactly as without SecAgg+ (`secagg_when_asked`). The mod
scales the update by its weight / the round's bound and clips at ±8, so a node never
sends a weight above the bound (`secagg_reply`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from logging import WARNING
from pathlib import Path
from typing import Any

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
from flwr.app.message_type import MessageType
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import (
    Code,
    FitRes,
    Status,
    log,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

from federation.apps.fab import running_fab_hash
from federation.apps.tasks import (
    NodeContext,
    TrainOutcome,
    audit_task,
    calibrate_task,
    close_task,
    evaluate_task,
    train_task,
)
from federation.launch.params import MAX_WEIGHT, PARAM_NAMES, WEIGHT_CAPPED, RunParams
from federation.node.consent import consent_filter_for
from federation.node.enrol import checkpoint_best_effort
from federation.node.refusal import Refusal

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


def secagg_when_asked(msg: Message, context: Context, call_next: ClientAppCallable
                      ) -> Message:
    """Flower's SecAgg+ mod for training messages that ask for it (plain runs pass by).
    A governance refusal raised under the mod is answered as in a plain round."""
    if (msg.metadata.message_type != MessageType.TRAIN
            or RECORD_KEY_CONFIGS not in msg.content.config_records):
        return call_next(msg, context)
    try:
        return secaggplus_mod(msg, context, call_next)
    except Refusal as refusal:
        return _refused(msg, context, refusal)


def secagg_reply(out: TrainOutcome, names: list[str], max_weight: int) -> RecordDict:
    """The FitRes-shaped reply of SecAgg+'s collect stage, weighted by the node's disclosed
    example count, or by `max_weight` when the count is above it (data ingested after the
    catalogue entry the portal took the bound from): a larger weight would have Flower's
    mod clip this update at ±8 without a word, a capped one only weighs it less, and the
    node says so in its log and in its metrics (`weight-capped-at`, shown in the report)."""
    examples = int(out.metrics["num-examples"])
    metrics = dict(out.metrics)
    if examples > max_weight:
        log(WARNING, "[TRE] %s: %d training examples are above the SecAgg+ weight bound %d "
            "of this run; the update is sent with weight %d", out.hospital_id, examples,
            max_weight, max_weight)
        metrics[WEIGHT_CAPPED] = max_weight
    content = compat.fitres_to_recorddict(FitRes(
        status=Status(Code.OK, ""), num_examples=min(examples, max_weight),
        parameters=ndarrays_to_parameters([out.weights[n] for n in names]), metrics={},
    ), keep_input=False)
    content["metrics"] = MetricRecord(metrics)
    return content


app = ClientApp(mods=[secagg_when_asked])


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One governed DP round on the node's consented training split."""
    legacy = "fitins.parameters" in msg.content.array_records
    try:
        params = RunParams.from_run_config(dict(context.run_config))
        if legacy:  # SecAgg+'s collect stage: FitIns in, FitRes out
            config = msg.content.config_records["fitins.config"]
            names = json.loads(str(config[PARAM_NAMES]))
            arrays = parameters_to_ndarrays(compat.arrayrecord_to_parameters(
                msg.content.array_records["fitins.parameters"], keep_input=True))
            weights: dict[str, np.ndarray] | None = dict(zip(names, arrays, strict=True))
        else:
            config = msg.content.config_records.get("config", ConfigRecord())
            arrays_in = msg.content.array_records.get("arrays")
            weights = None if arrays_in is None else to_weights(arrays_in)
        out = train_task(
            _ctx(msg, context), params, server_round=int(config.get("server-round", 1)),
            weights=weights, proximal_mu=float(config.get("proximal-mu", 0.0)),
        )
    except Refusal as refusal:
        if legacy:
            raise  # through secaggplus_mod to `secagg_when_asked`, which answers it
        return _refused(msg, context, refusal)
    node = ConfigRecord({"hospital-id": out.hospital_id, "dataset-id": out.dataset_id,
                         "excluded-by-consent": str(out.excluded_by_consent)})
    if legacy:
        content = secagg_reply(out, names, int(config[MAX_WEIGHT]))
        content["node"] = node
        return Message(content=content, reply_to=msg)
    content = RecordDict({"arrays": to_arrays(out.weights),
                          "metrics": MetricRecord(out.metrics), "node": node})
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


def _on_final_model(msg: Message, context: Context, task: Callable[..., dict[str, Any]]
                    ) -> dict[str, Any] | Message:
    """`task` (the audit, the calibration) on the final model the message carries, or
    the reply to its refusal."""
    try:
        params = RunParams.from_run_config(dict(context.run_config))
        return task(_ctx(msg, context), params,
                    weights=to_weights(msg.content.array_records["arrays"]))
    except Refusal as refusal:
        return _refused(msg, context, refusal)


@app.query("audit")
def audit(msg: Message, context: Context) -> Message:
    """Membership-inference audit of the final model; only the attack's advantage leaves."""
    out = _on_final_model(msg, context, audit_task)
    if isinstance(out, Message):
        return out
    hospital = str(out.pop("hospital-id"))
    return Message(content=RecordDict({"metrics": MetricRecord(out),
                                       "node": ConfigRecord({"hospital-id": hospital})}),
                   reply_to=msg)


@app.query("calibrate")
def calibrate(msg: Message, context: Context) -> Message:
    """The final model's rates at fixed thresholds on the val and test splits, as
    disclosure lets them leave (the server picks the decision threshold on val)."""
    out = _on_final_model(msg, context, calibrate_task)
    if isinstance(out, Message):
        return out
    return Message(content=RecordDict({"metrics": MetricRecord(out)}), reply_to=msg)


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
