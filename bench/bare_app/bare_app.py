"""Bare Flower app: same CNN, data and DP-SGD step as the governed app, no governance."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from federation.node.data import load_images
from federation.node.home import NodeHome
from federation.training.data import images_to_tensor
from federation.training.dp import DPPlan, DPTrainer, steps_per_epoch
from federation.training.evaluation import TensorSet, evaluate
from federation.training.models import ModelSpec, build_model

client = ClientApp()
server = ServerApp()


def _data(context: Context, split: str) -> tuple[np.ndarray, np.ndarray]:
    home = NodeHome(str(context.node_config["node-home"]))
    try:
        images, labels, _ = load_images(home.db, str(context.run_config["dataset-id"]), split)
        return images, labels
    finally:
        home.db.close()


def _model(arrays: ArrayRecord) -> torch.nn.Module:
    m = build_model("cnn-gn", ModelSpec(), seed=0)
    m.load_state_dict({k: torch.from_numpy(np.array(v.numpy())) for k, v in arrays.items()})
    return m


@client.train()
def train(msg: Message, context: Context) -> Message:
    torch.set_num_threads(1)
    x, y = _data(context, "train")
    cfg = context.run_config
    spe = steps_per_epoch(len(y), int(cfg["batch-size"]))
    plan = DPPlan(8.0, 1e-5, "rdp", float(cfg["noise-multiplier"]), 1.0 / spe, spe, 1, 1.0,
                  int(cfg["batch-size"]), len(y))
    trainer = DPTrainer(_model(msg.content["arrays"]), images_to_tensor(x), torch.from_numpy(y),
                        plan, [], lr=float(cfg["lr"]))
    started = time.perf_counter()
    res = trainer.train_round(1)
    seconds = time.perf_counter() - started
    state = trainer.module().state_dict()
    arrays = ArrayRecord.from_array_dict({k: Array(v.detach().numpy()) for k, v in state.items()})
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(
        {"num-examples": len(y), "train-loss": res.train_loss, "train-seconds": seconds})}),
        reply_to=msg)


@client.evaluate()
def evaluate_fn(msg: Message, context: Context) -> Message:
    torch.set_num_threads(1)
    x, y = _data(context, "test")
    out = evaluate(_model(msg.content["arrays"]),
                   TensorSet(images_to_tensor(x), torch.from_numpy(y)))
    return Message(RecordDict({"metrics": MetricRecord(out)}), reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    out = Path(str(cfg["results-dir"])) / "bare.jsonl"
    arrays = ArrayRecord(build_model("cnn-gn", ModelSpec(), seed=0).state_dict())
    strategy = FedAvg(min_train_nodes=3, min_evaluate_nodes=3, min_available_nodes=3)
    for rnd in range(1, int(cfg["rounds"]) + 1):
        t0 = time.time()
        replies = list(grid.send_and_receive(
            strategy.configure_train(rnd, arrays, ConfigRecord(), grid)))
        local = max(float(r.content["metrics"]["train-seconds"]) for r in replies)
        agg, _ = strategy.aggregate_train(rnd, replies)
        arrays = agg if agg is not None else arrays
        ev = list(grid.send_and_receive(
            strategy.configure_evaluate(rnd, arrays, ConfigRecord(), grid)))
        strategy.aggregate_evaluate(rnd, ev)
        with out.open("a") as f:
            f.write(json.dumps({"round": rnd, "seconds": time.time() - t0,
                                "slowest_local_training_s": local}) + "\n")
