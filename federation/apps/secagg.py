"""One training round through Flower's SecAgg+ (the ServerApp side), and what it shows.

flwr 1.42 offers secure aggregation only as the legacy `SecAggPlusWorkflow`, driven
by a `LegacyContext` around a legacy strategy. `secagg_round` runs one round of it
over the run's `PermittedGrid` and gives back the aggregate, the replies the governed
loop needs for its node rows (each node's ε and disclosed counts, or its refusal),
and why the round halted when it did. The cryptography is Flower's own.

Legacy `Parameters` carry no names: the model's state-dict names travel in the fit
config (`param-names`) so each node rebuilds its named weights, and the aggregate is
named and cast back here (the workflow dequantizes to float64).

Each node multiplies its update by weight / `max_weight` before quantising it within
±8: a weight above the bound would clip the update, a bound far above every weight
wastes quantisation levels. The run's `secagg_max_weight` (the portal's bound from the
catalogue) is used, Flower's default where the run has none, and travels in the fit
config (`MAX_WEIGHT`) so that a node whose data grew since publication sends the bound
as its weight rather than an update Flower would clip (`federation.apps.client`).

`TRE_SECAGG_TRACE_DIR` (tests and demonstrations only): when set in the ServerApp's
environment, what the server receives per node (the masked vectors under SecAgg+, the
plain weights otherwise) and each round's aggregate are written there, so a test can
show what a curious SuperLink operator sees.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message
from flwr.common import (
    bytes_to_ndarray,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    Key,
    Stage,
)
from flwr.compat.common import recorddict_compat as compat
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from federation.launch.params import MAX_WEIGHT, PARAM_NAMES

TRACE_ENV = "TRE_SECAGG_TRACE_DIR"
FLOWER_MAX_WEIGHT = 1000  # SecAggPlusWorkflow's default: a run with no bound derived


def secagg_parameters(nodes: int) -> tuple[int, int]:
    """(num_shares, reconstruction_threshold) for a round over `nodes` nodes.

    Every node shares its keys with all others (num_shares = nodes), and a majority
    must take part to unmask: fewer than `threshold` colluders (the server among them)
    cannot rebuild anyone's mask, and up to nodes - threshold may drop after sharing
    keys without losing the round."""
    return nodes, nodes // 2 + 1


@dataclass
class SecAggRound:
    """What one SecAgg+ round produced for the governed loop."""

    arrays: ArrayRecord | None
    """The aggregate, named as the global model; None when the round halted."""
    replies: list[Message] = field(default_factory=list)
    """Per node: its collect-stage reply (metrics, node config) or its error."""
    sent_to: dict[str, int] = field(default_factory=dict)
    """Message id → node id, for replies the SuperLink wrote for a vanished node."""
    halted: str | None = None
    num_shares: int = 0
    threshold: int = 0
    max_weight: int = 0


class RecordingGrid:
    """The grid the workflow talks to: passes everything through, and keeps per node
    the reply that matters (collect stage, else the first error) and the stage it
    reached, so the round's node rows and halts can be reported."""

    def __init__(self, grid: Any, trace: Path | None, server_round: int) -> None:
        self._grid = grid
        self.trace = trace
        self.server_round = server_round
        self.stage = ""
        self.replies: dict[int, Message] = {}
        self.sent_to: dict[str, int] = {}

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        msgs = list(messages)
        if msgs:
            self.stage = str(msgs[0].content.config_records[RECORD_KEY_CONFIGS][Key.STAGE])
        if self.trace is not None:
            (self.trace / f"round-{self.server_round}-{self.stage}.started").touch()
        replies = list(self._grid.send_and_receive(msgs, timeout=timeout))
        self.sent_to.update({m.metadata.message_id: int(m.metadata.dst_node_id) for m in msgs})
        for reply in replies:
            nid = self.sent_to.get(reply.metadata.reply_to_message_id,
                                   int(reply.metadata.src_node_id))
            if reply.has_error():
                self.replies.setdefault(nid, reply)
            elif self.stage == Stage.COLLECT_MASKED_VECTORS:
                self.replies[nid] = reply
                if self.trace is not None:
                    masked = reply.content.config_records[RECORD_KEY_CONFIGS][
                        Key.MASKED_PARAMETERS]
                    np.savez(self.trace / f"round-{self.server_round}-masked-{nid}.npz",
                             *[bytes_to_ndarray(b) for b in masked])  # type: ignore[union-attr]
        return replies

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def trace_dir(run_id: int) -> Path | None:
    """This run's trace folder when `TRE_SECAGG_TRACE_DIR` is set (tests only)."""
    root = os.environ.get(TRACE_ENV)
    if not root:
        return None
    path = Path(root) / str(run_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


def trace_arrays(trace: Path | None, name: str, arrays: dict[str, np.ndarray]) -> None:
    if trace is not None:
        np.savez(trace / f"{name}.npz", **arrays)


def secagg_round(grid: Grid, context: Context, *, server_round: int, arrays: ArrayRecord,
                 config: dict[str, Any], node_ids: list[int], timeout: float,
                 max_weight: int) -> SecAggRound:
    """Train one round with SecAgg+ over `node_ids` (the permitted nodes online now), for
    node weights up to `max_weight` (0: Flower's default)."""
    max_weight = max_weight or FLOWER_MAX_WEIGHT
    names = list(arrays.keys())
    originals = {k: v.numpy() for k, v in arrays.items()}
    num_shares, threshold = secagg_parameters(len(node_ids))
    out = SecAggRound(arrays=None, num_shares=num_shares, threshold=threshold,
                      max_weight=max_weight)
    if len(node_ids) < 3:
        out.halted = (f"secure aggregation needs at least 3 nodes; {len(node_ids)} "
                      "permitted node(s) are online")
        return out
    fit_config = {**config, "server-round": server_round, PARAM_NAMES: json.dumps(names),
                  MAX_WEIGHT: max_weight}
    strategy = LegacyFedAvg(
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=len(node_ids),
        min_available_clients=len(node_ids), accept_failures=True,
        on_fit_config_fn=lambda _rnd: dict(fit_config),
    )
    legacy = LegacyContext(context, strategy=strategy, client_manager=SimpleClientManager())
    for nid in node_ids:
        legacy.client_manager.register(GridClientProxy(nid, grid, context.run_id))
    before = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters([originals[k] for k in names]), keep_input=True)
    legacy.state.array_records[MAIN_PARAMS_RECORD] = before
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
        {WorkflowKey.CURRENT_ROUND: server_round})
    trace = trace_dir(context.run_id)
    recorder = RecordingGrid(grid, trace, server_round)
    workflow = SecAggPlusWorkflow(num_shares=num_shares, reconstruction_threshold=threshold,
                                  max_weight=max_weight, timeout=timeout)
    try:
        workflow(recorder, legacy)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - a protocol failure stops the run, cleanly
        out.halted = f"secure aggregation failed at stage {recorder.stage}: {exc!r}"
    out.replies = list(recorder.replies.values())
    out.sent_to = recorder.sent_to
    after = legacy.state.array_records[MAIN_PARAMS_RECORD]
    if after is before:
        trained = sum(1 for m in out.replies if not m.has_error())
        out.halted = out.halted or (
            f"secure aggregation halted at stage {recorder.stage or 'setup'}: "
            f"{trained} node(s) sent masked updates, the reconstruction threshold is "
            f"{threshold} of {num_shares} shares")
        return out
    ndarrays = parameters_to_ndarrays(compat.arrayrecord_to_parameters(after, keep_input=True))
    named = {k: np.asarray(a).reshape(originals[k].shape).astype(originals[k].dtype)
             for k, a in zip(names, ndarrays, strict=True)}
    trace_arrays(trace, f"round-{server_round}-aggregate", named)
    out.arrays = ArrayRecord.from_array_dict(
        {k: Array(np.ascontiguousarray(v)) for k, v in named.items()})
    return out

