"""The training ServerApp: FedAvg (weighted by examples) or FedProx over governed nodes,
with optional server momentum (FedAvgM) on the aggregate.

Runs beside the SuperLink. It never sees data: it sends the global model, gets
back DP-trained weights and aggregate metrics, and records per round what each
hospital reported (ε spent so far, or why it refused). At the end it asks every
node for its val and test splits' rates at fixed decision thresholds (the report's
`decision_threshold`), for its membership-inference audit, and to release the
unused part of its ε reservation, and sends the final model and report to the
portal that started the run (`federation.launch.report`).

Node selection by permit: the run config's `node-map` (hospital → Flower node id,
fixed when each hospital enrolled its SuperNode key: `tre.portal.services.nodes`)
restricted to the permit's hospitals is the only set of nodes this app addresses
(`PermittedGrid`); other SuperNodes on the SuperLink never get a message. Without a
node map (development, insecure SuperLink: node ids are then self-chosen) every
connected node is addressed and nodes outside the permit refuse on their own.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Iterable
from logging import INFO, WARNING
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedProx

from access_control.permits import unverified_claims
from federation.apps.client import to_arrays, to_weights
from federation.apps.secagg import secagg_round, trace_arrays, trace_dir
from federation.apps.tasks import params_spec
from federation.launch.params import (
    SECAGG_MIN_HOSPITALS,
    WEIGHT_CAPPED,
    RunParams,
    parse_node_map,
)
from federation.launch.report import results_sender
from federation.training.evaluation import CALIBRATION_KEYS, accuracy_at, pick_threshold
from federation.training.membership import ATTACKS, FIGURES
from federation.training.models import build_model
from federation.training.server_opt import ServerMomentum, TailAverage

app = ServerApp()


def weighted_mean_finite(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Example-weighted mean per metric over the nodes where it is defined (AUC is
    undefined on a node whose split holds one class); sums for counts. A standard error
    (`<metric>-se`) is that of the weighted mean of independent nodes' estimates:
    sqrt(sum (w_i se_i)^2) / sum w_i."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    total = 0.0
    for rec in records:
        m = next(iter(rec.metric_records.values()))
        w = float(m.get(weight_key, 0) or 0)
        total += w
        for k, v in m.items():
            if k == weight_key or isinstance(v, list):
                continue
            v = float(v)
            if math.isfinite(v) and w > 0:
                sums[k] = sums.get(k, 0.0) + ((v * w) ** 2 if k.endswith("-se") else v * w)
                weights[k] = weights.get(k, 0.0) + w
    out = MetricRecord({k: (math.sqrt(sums[k]) if k.endswith("-se") else sums[k]) / weights[k]
                        for k in sums})
    out[weight_key] = int(total)
    return out


def train_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """The federation's examples (a sum of disclosed counts) and the largest ε any node
    has spent (not an average); nodes send no training loss."""
    metrics = [next(iter(r.metric_records.values())) for r in records]
    return MetricRecord({
        weight_key: int(sum(int(m.get(weight_key, 0) or 0) for m in metrics)),
        "epsilon-max": max((float(m.get("epsilon", 0)) for m in metrics), default=0.0)})


def _disclosed(value: Any) -> int | str | None:
    """A disclosed count as the node sent it: a number, or a marker such as "<10"."""
    return int(value) if isinstance(value, str) and value.isdigit() else value


def _node_row(msg: Message, sent_to: dict[str, int]) -> dict[str, Any]:
    """One node's line of a round. A reply the SuperLink wrote for a node that went away
    names the SuperLink as its source, so the node is found from the message it answers."""
    node_id = sent_to.get(msg.metadata.reply_to_message_id, int(msg.metadata.src_node_id))
    row: dict[str, Any] = {"node_id": node_id}
    if msg.has_error():
        if msg.error.code == ErrorCode.NODE_UNAVAILABLE:
            row.update(status="no-reply", reason="node unavailable: it stopped sending "
                       "heartbeats (node down?)")
        else:
            row.update(status="refused", reason=msg.error.reason)
        return row
    m = msg.content.metric_records.get("metrics", MetricRecord())
    node = msg.content.config_records.get("node", ConfigRecord())
    row.update(
        status="trained", hospital_id=node.get("hospital-id"), dataset_id=node.get("dataset-id"),
        epsilon=m.get("epsilon"), epsilon_target=m.get("epsilon-target"), delta=m.get("delta"),
        noise_multiplier=m.get("noise-multiplier"), steps=m.get("steps"),
        num_examples=m.get("num-examples"), train_seconds=m.get("train-seconds"),
        excluded_by_consent=_disclosed(node.get("excluded-by-consent")),
    )
    if WEIGHT_CAPPED in m:  # SecAgg+: the node's examples were above the run's bound
        row["weight_capped_at"] = int(m[WEIGHT_CAPPED])
    return row


class PermittedGrid:
    """The Grid as this run may see it: only the enrolled nodes of the permit's hospitals.

    Strategies sample from `get_node_ids()`, so they never pick another node, and
    `send_and_receive` drops any message addressed elsewhere (defence in depth)."""

    def __init__(self, grid: Grid, allowed: set[int] | None) -> None:
        self._grid = grid
        self.allowed = allowed

    def get_node_ids(self) -> list[int]:
        ids = list(self._grid.get_node_ids())
        return ids if self.allowed is None else [n for n in ids if n in self.allowed]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        msgs = [m for m in messages
                if self.allowed is None or m.metadata.dst_node_id in self.allowed]
        return self._grid.send_and_receive(msgs, timeout=timeout) if msgs else []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def select_nodes(node_map_text: str, hospitals: list[str]) -> tuple[set[int] | None, dict]:
    """The node ids of the permit's hospitals from the run's node map (None: no map)."""
    node_map = parse_node_map(node_map_text)
    if not node_map:
        return None, {"mode": "all-connected", "node_map": {}}
    chosen = {h: n for h, n in node_map.items() if h in set(hospitals)}
    return set(chosen.values()), {"mode": "enrolled", "node_map": chosen,
                                  "ignored": sorted(set(node_map) - set(chosen))}


def _permit_summary(token: str) -> dict[str, Any]:
    try:
        c = unverified_claims(token)
    except Exception:  # noqa: BLE001 - nodes refuse bad permits; the server only reports
        return {}
    return {"permit_id": c.get("permit_id"), "app_hash": c.get("app_hash"),
            "hospitals": sorted({d["node_id"] for d in c.get("datasets", [])}),
            "min_hospitals": c.get("min_hospitals", 1)}


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the governed rounds; progress, the report and the model go to the portal."""
    params = RunParams.from_run_config(dict(context.run_config))
    events = results_sender()
    permit = _permit_summary(params.permit)
    hospitals = permit.get("hospitals") or []
    min_nodes = params.min_nodes or max(len(hospitals), 1)
    allowed, selection = select_nodes(params.node_map, hospitals)
    grid = PermittedGrid(grid, allowed)  # type: ignore[assignment]
    by_node = {n: h for h, n in selection["node_map"].items()}
    started = time.time()
    report: dict[str, Any] = {
        "run_id": context.run_id, "permit": permit, "params": {
            k: v for k, v in params.to_run_config().items() if k != "permit"},
        "started_at": started, "rounds": [], "status": "running",
        "node_selection": selection,
    }
    if allowed is not None and len(allowed) < min_nodes:
        report.update(status="failed", error=f"only {len(allowed)} of the permit's hospitals "
                      f"have an enrolled node; the run needs {min_nodes}")
        events.report(report)
        events.emit("end", status="failed", error=report["error"])
        return
    events.emit("start", run_id=context.run_id, permit=permit, min_nodes=min_nodes,
                params=report["params"])
    secagg = bool(params.secagg)
    if secagg and len(hospitals) < SECAGG_MIN_HOSPITALS:
        report.update(status="failed", error=f"secure aggregation needs at least "
                      f"{SECAGG_MIN_HOSPITALS} hospitals; the permit names {len(hospitals)}")
        events.report(report)
        events.emit("end", status="failed", error=report["error"])
        log(WARNING, report["error"])
        return
    report["secure_aggregation"] = secagg
    report["secagg"] = None  # SecAgg+ parameters of the last round, when on
    trace = trace_dir(context.run_id)

    model = build_model(params.model, params_spec(params), seed=params.seed)
    arrays = ArrayRecord(model.state_dict())
    common = {"fraction_train": 1.0, "fraction_evaluate": 1.0, "min_train_nodes": min_nodes,
              "min_evaluate_nodes": min_nodes, "min_available_nodes": min_nodes,
              "train_metrics_aggr_fn": train_metrics,
              "evaluate_metrics_aggr_fn": weighted_mean_finite}
    strategy = (FedProx(proximal_mu=params.proximal_mu, **common)
                if params.strategy == "fedprox" else FedAvg(**common))
    # after the aggregate, plain or SecAgg+'s alike: FedAvgM's server momentum
    server_opt = ServerMomentum(params.server_lr, params.server_momentum)
    # what is evaluated each round and released at the end: the mean of the last
    # `average-last` global models (the last one by default)
    averager = TailAverage(params.average_last)
    released = arrays
    trained_nodes: set[int] = set()
    status = "completed"
    for rnd in range(1, params.rounds + 1):
        t0 = time.time()
        if secagg:
            online = list(grid.get_node_ids())
            sa = secagg_round(grid, context, server_round=rnd, arrays=arrays,
                              config={"lr": params.lr,
                                      "proximal-mu": params.node_proximal_mu()},
                              node_ids=online, timeout=params.round_timeout,
                              max_weight=params.secagg_max_weight)
            report["secagg"] = {"num_shares": sa.num_shares,
                                "reconstruction_threshold": sa.threshold,
                                "max_weight": sa.max_weight}
            replies, sent_to = sa.replies, sa.sent_to
        else:
            sent = list(strategy.configure_train(rnd, arrays, ConfigRecord({"lr": params.lr}),
                                                 grid))
            replies = list(grid.send_and_receive(sent, timeout=params.round_timeout))
            # the Grid gave each message its id when it pushed it
            sent_to = {m.metadata.message_id: int(m.metadata.dst_node_id) for m in sent}
        nodes = [_node_row(m, sent_to) for m in replies]
        for n in nodes:
            n.setdefault("hospital_id", by_node.get(n["node_id"]))
        answered = {n["node_id"] for n in nodes}
        nodes += [{"node_id": nid, "hospital_id": h, "status": "no-reply",
                   "reason": f"no reply within {params.round_timeout}s (node down?)"}
                  for nid, h in by_node.items() if nid not in answered]
        ok = [m for m in replies if not m.has_error()]
        trained_nodes.update(sent_to.get(m.metadata.reply_to_message_id,
                                         int(m.metadata.src_node_id)) for m in ok)
        if secagg:
            # only the masked sum was seen: the aggregate is SecAgg+'s, the metrics are
            # each node's own (ε, disclosed counts), as in a plain round
            agg_arrays = sa.arrays
            agg_train = train_metrics([RecordDict({"metrics": m.content.metric_records[
                "metrics"]}) for m in ok], "num-examples") if agg_arrays is not None else None
        else:
            for m in ok if trace is not None else []:
                nid = sent_to.get(m.metadata.reply_to_message_id, int(m.metadata.src_node_id))
                trace_arrays(trace, f"round-{rnd}-plain-{nid}",
                             {k: v.numpy() for k, v in m.content.array_records["arrays"].items()})
            agg_arrays, agg_train = (strategy.aggregate_train(rnd, ok) if ok else (None, None))
            if agg_arrays is not None and trace is not None:
                trace_arrays(trace, f"round-{rnd}-aggregate",
                             {k: v.numpy() for k, v in agg_arrays.items()})
        if agg_arrays is not None:
            weights = server_opt.step(to_weights(arrays), to_weights(agg_arrays))
            arrays = to_arrays(weights)
            averaged = averager.add(weights)
            released = arrays if averaged is weights else to_arrays(averaged)
        eval_metrics = None
        if agg_arrays is not None:
            ev = list(grid.send_and_receive(
                strategy.configure_evaluate(rnd, released, ConfigRecord(), grid),
                timeout=params.round_timeout,
            ))
            ev_ok = [m for m in ev if not m.has_error()]
            agg_eval = strategy.aggregate_evaluate(rnd, ev_ok) if ev_ok else None
            eval_metrics = dict(agg_eval) if agg_eval is not None else None
        row = {"round": rnd, "seconds": time.time() - t0, "nodes": nodes,
               "train": dict(agg_train) if agg_train is not None else None,
               "evaluate": eval_metrics}
        report["rounds"].append(row)
        events.emit("round", **row)
        log(INFO, "[TRE] round %d: %s", rnd, {n.get("hospital_id") or n["node_id"]:
                                               n.get("epsilon") or n.get("reason")
                                               for n in nodes})
        if secagg and sa.halted:
            status = "stopped"
            report["stop_reason"] = f"round {rnd}: {sa.halted}"
            break
        if len(ok) < min_nodes:
            status = "stopped"
            report["stop_reason"] = (f"round {rnd}: {len(ok)} of the {min_nodes} required "
                                     "hospitals trained")
            break

    # Nodes that went away are not waited for: they settle their reservation themselves
    # when they next start (`federation.node.recovery`).
    online = set(grid.get_node_ids())
    report["decision_threshold"] = _calibrate(grid, released, trained_nodes & online, params)
    report["privacy_audits"] = _privacy_audits(grid, released, trained_nodes & online, params)
    # Release what each node reserved but did not spend (e.g. the run stopped early).
    releases = []
    trained_nodes &= online
    if trained_nodes:
        msgs = [Message(content=RecordDict({"config": ConfigRecord()}),
                        message_type="query.close", dst_node_id=nid) for nid in trained_nodes]
        for m in grid.send_and_receive(msgs, timeout=120):
            if m.has_error():
                releases.append({"node_id": int(m.metadata.src_node_id), "error": m.error.reason})
            else:
                mm = m.content.metric_records.get("metrics", MetricRecord())
                releases.append({"node_id": int(m.metadata.src_node_id),
                                 "released": mm.get("released"), "charged": mm.get("charged")})
    report.update(status=status, releases=releases, finished_at=time.time(),
                  seconds=time.time() - started)
    report["epsilon_per_node"] = _final_epsilons(report["rounds"])
    state = {k: torch.from_numpy(np.array(v.numpy())) for k, v in released.items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    events.model(buffer.getvalue())
    events.report(report)
    events.emit("end", status=status, epsilon_per_node=report["epsilon_per_node"],
                stop_reason=report.get("stop_reason"))


def _calibrate(grid: Grid, arrays: ArrayRecord, nodes: set[int], params: RunParams
               ) -> dict[str, Any] | None:
    """The final model's decision threshold on P(class 1), picked over the nodes' val
    splits pooled (`pick_threshold`), and its accuracy at that threshold over their test
    splits pooled (`accuracy_at`), from what each node's disclosure control let leave
    (`calibrate_task`); None for a model of more than two classes. No count in it: the
    airlock reads every integer of a report as one."""
    if not nodes or params.num_classes != 2:
        return None
    msgs = [Message(content=RecordDict({"arrays": arrays, "config": ConfigRecord()}),
                    message_type="query.calibrate", dst_node_id=nid) for nid in nodes]
    val, test, errors = [], [], []
    for m in grid.send_and_receive(msgs, timeout=params.round_timeout):
        if m.has_error():
            errors.append({"node_id": int(m.metadata.src_node_id), "error": m.error.reason})
            continue
        mm = m.content.metric_records.get("metrics", MetricRecord())
        val.append({k: mm.get(k) for k in CALIBRATION_KEYS})
        test.append({k: mm.get(f"test-{k}") for k in CALIBRATION_KEYS})
    threshold = pick_threshold(val)
    return {"threshold": threshold, **accuracy_at(test, threshold), "errors": errors,
            "rule": "highest balanced accuracy over the nodes' val splits pooled"}


def _privacy_audits(grid: Grid, arrays: ArrayRecord, nodes: set[int], params: RunParams
                    ) -> list[dict[str, Any]]:
    """Each node's membership-inference audit of the final model (for the airlock)."""
    if not nodes:
        return []
    msgs = [Message(content=RecordDict({"arrays": arrays, "config": ConfigRecord()}),
                    message_type="query.audit", dst_node_id=nid) for nid in nodes]
    audits = []
    for m in grid.send_and_receive(msgs, timeout=params.round_timeout):
        if m.has_error():
            audits.append({"node_id": int(m.metadata.src_node_id), "error": m.error.reason})
            continue
        mm = m.content.metric_records.get("metrics", MetricRecord())
        node = m.content.config_records.get("node", ConfigRecord())
        audit = {key.replace("-", "_"): mm.get(key) for key in FIGURES}
        attack = audit.pop("mia_attack")
        audits.append({"node_id": int(m.metadata.src_node_id),
                       "hospital_id": node.get("hospital-id"), **audit,
                       "mia_attack": None if attack is None else ATTACKS[int(attack)],
                       "records": mm.get("mia-records")})
    return audits


def _final_epsilons(rounds: Iterable[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in rounds:
        for n in r["nodes"]:
            if n.get("status") == "trained" and n.get("hospital_id"):
                out[n["hospital_id"]] = float(n["epsilon"])
    return out
