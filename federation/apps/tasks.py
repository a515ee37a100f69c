"""What a node does for one message of a governed run, independent of Flower's types.

`train_task`, `evaluate_task` and `close_task` are the only paths by which the
training app touches a node's data; each goes through `Governor` first (permit,
scope, app hash, consent, ε) and reads records only after every check passed.
The ClientApp is a thin adapter over these, so tests drive the same code.

torch and Opacus are imported inside the functions that train or evaluate:
every message runs in a fresh process, and a refusal or a `close` should not
wait for a deep-learning stack to load.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from federation.apps.params import RunParams
from federation.node.data import load_images
from federation.node.governance import (
    Authorisation,
    ConsentFilter,
    Governor,
    Refusal,
    RegimeConsentFilter,
    RevocationList,
    node_session,
)
from federation.node.ledger import Reservation
from federation.training.data import images_to_tensor

if TYPE_CHECKING:
    from federation.training.dp import DPPlan
    from federation.training.models import ModelSpec

Weights = dict[str, np.ndarray]


@dataclass
class NodeContext:
    """Everything a task needs from its surroundings (Flower gives these per message)."""

    home: Path
    run_id: str
    app_hash: str | None
    consent_filter: ConsentFilter | Callable[[Any], ConsentFilter] = field(
        default_factory=RegimeConsentFilter)
    """A filter, or a factory given the open NodeHome (e.g. the snapshot filter)."""
    revocations: Callable[[], RevocationList] | None = None
    run_tickets: Callable[[str], str] | None = None
    """The portal's run ticket for a run id (None: fetched from the node's portal)."""
    clock: Callable[[], float] = time.time


@dataclass
class TrainOutcome:
    weights: Weights
    metrics: dict[str, float]
    hospital_id: str
    dataset_id: str


def _governor(home: Any, ctx: NodeContext) -> Governor:
    cf = ctx.consent_filter
    if not hasattr(cf, "filter"):
        cf = cf(home)
    return Governor(home, consent_filter=cf, revocations=ctx.revocations,
                    run_tickets=ctx.run_tickets, clock=ctx.clock)


def _targets(auth: Authorisation, p: RunParams) -> tuple[float, float]:
    cap_eps, cap_delta = auth.dataset.epsilon_cap, auth.dataset.delta_cap
    eps = p.target_epsilon or cap_eps
    delta = p.delta or cap_delta
    if eps > cap_eps + 1e-12:
        raise Refusal("above-permit-cap",
                      f"requested ε {eps:g} is above the permit's cap {cap_eps:g}")
    if delta > cap_delta:
        raise Refusal("above-permit-cap",
                      f"requested δ {delta:g} is above the permit's cap {cap_delta:g}")
    return eps, delta


def params_spec(p: RunParams) -> ModelSpec:
    """The model's input shape comes from the run, so every node and the server agree."""
    from federation.training.models import ModelSpec

    return ModelSpec(in_channels=p.in_channels, image_size=p.image_size,
                     num_classes=p.num_classes)


def _check_shape(images: np.ndarray, labels: np.ndarray, p: RunParams) -> None:
    if len(labels) == 0:
        return
    if images.shape[1:] != (p.image_size, p.image_size, p.in_channels):
        raise Refusal("data-shape", f"images here are {images.shape[1:]} (H, W, C), the run "
                      f"expects {(p.image_size, p.image_size, p.in_channels)}")
    if int(labels.max()) >= p.num_classes:
        raise Refusal("data-shape", f"labels here go up to {int(labels.max())}, the run "
                      f"expects {p.num_classes} classes")


def train_task(
    ctx: NodeContext, params: RunParams, *, server_round: int, weights: Weights | None,
    proximal_mu: float = 0.0,
) -> TrainOutcome:
    """One round of governed DP training at this node.

    Round 1 (or the node's first round of the run) plans the noise for all remaining
    rounds and reserves their ε; every round charges its steps before reading data.
    Raises Refusal (already audited) when any check fails: nothing was read.
    """
    import torch

    from federation.training.dp import DPTrainer, plan_dp, steps_per_epoch
    from federation.training.models import build_model, model_kind

    if model_kind(params.model) != "imaging":
        raise Refusal("unsupported-model",
                      f"model {params.model!r} trains on clinical tables: not served here yet")
    with node_session(ctx.home) as home:
        gov = _governor(home, ctx)
        auth = gov.authorise(params.permit, app_hash=ctx.app_hash, run_id=ctx.run_id,
                             dataset_id=params.dataset_id or None)
        try:
            eps_target, delta = _targets(auth, params)
        except Refusal as refusal:
            gov.refuse(refusal, run_id=ctx.run_id, permit_id=auth.claims.permit_id,
                       stage="targets")
            raise
        cohort = gov.cohort(auth, "train")
        n = len(cohort.pseudonyms)
        if n == 0:
            refusal = Refusal("no-consented-records",
                              f"no record of {auth.dataset.dataset_id!r} may be used for "
                              f"{auth.claims.purpose} ({cohort.basis})")
            gov.refuse(refusal, run_id=ctx.run_id, permit_id=auth.claims.permit_id,
                       stage="consent")
            raise refusal
        res = gov.ledger.reservation(ctx.run_id, auth.claims.permit_id, auth.dataset.dataset_id)
        if res is None:
            plan = plan_dp(
                num_examples=n, batch_size=params.batch_size, local_epochs=params.local_epochs,
                rounds=max(1, params.rounds - server_round + 1), target_epsilon=eps_target,
                delta=delta, max_grad_norm=params.max_grad_norm, accountant=params.accountant,
            )
            res = gov.reserve(auth, plan)
        plan = _plan_from(res, params, n)
        if plan.steps_per_round != steps_per_epoch(n, params.batch_size) * params.local_epochs:
            refusal = Refusal("cohort-changed",
                              "the consented cohort changed size since the run was planned; "
                              "its noise no longer matches the reservation")
            gov.refuse(refusal, run_id=ctx.run_id, permit_id=auth.claims.permit_id,
                       stage="plan")
            gov.ledger.release(res, reason="cohort changed")
            raise refusal
        history = gov.ledger.history(res.reservation_id)
        eps_after = gov.charge_round(auth, res, server_round=server_round,
                                     steps=res.steps_per_round)
        images, labels, _ = load_images(home.db, auth.dataset.dataset_id, "train",
                                      cohort.pseudonyms)
        gov.audit_read(auth, split="train", records=len(labels), excluded=cohort.excluded,
                       purpose=f"train round {server_round}")
        try:
            _check_shape(images, labels, params)
        except Refusal as refusal:
            gov.refuse(refusal, run_id=ctx.run_id, permit_id=auth.claims.permit_id,
                       stage="shape")
            raise
        if len(history) + 1 >= res.rounds:
            gov.ledger.release(res, reason="planned rounds complete")
        hospital = home.config.hospital_id
    # The store is closed from here on: training holds only the consented tensors.
    torch.set_num_threads(1)
    model = build_model(params.model, params_spec(params), seed=params.seed)
    if weights is not None:
        model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
    global_params = [p.detach().clone() for p in model.parameters()]
    trainer = DPTrainer(model, images_to_tensor(images), torch.from_numpy(labels), plan, history,
                        lr=params.lr, momentum=params.momentum,
                        grad_sample_mode=params.grad_sample_mode,
                        seed=params.seed * 1000 + server_round)
    started = time.perf_counter()
    result = trainer.train_round(params.local_epochs, proximal_mu=proximal_mu,
                                 global_params=global_params)
    train_seconds = time.perf_counter() - started
    state = {k: v.detach().cpu().numpy() for k, v in trainer.module().state_dict().items()}
    metrics = {
        "num-examples": n,
        "train-loss": result.train_loss,
        "train-seconds": train_seconds,  # the node's own timing (bench: round overhead)
        "epsilon": eps_after,
        "epsilon-target": res.epsilon,
        "delta": res.delta,
        "noise-multiplier": res.noise_multiplier,
        "sample-rate": res.sample_rate,
        "steps": res.steps_per_round,
        "excluded-by-consent": cohort.excluded,
    }
    return TrainOutcome(state, metrics, hospital, auth.dataset.dataset_id)


def _plan_from(res: Reservation, params: RunParams, n: int) -> DPPlan:
    from federation.training.dp import DPPlan

    return DPPlan(
        target_epsilon=res.epsilon, delta=res.delta, accountant=res.accountant,
        noise_multiplier=res.noise_multiplier, sample_rate=res.sample_rate,
        steps_per_round=res.steps_per_round, rounds=res.rounds,
        max_grad_norm=res.max_grad_norm, batch_size=params.batch_size, num_examples=n,
    )


def evaluate_task(ctx: NodeContext, params: RunParams, *, weights: Weights) -> dict[str, float]:
    """Evaluate the global model on this node's consented test split; aggregate metrics only."""
    import torch

    from federation.training.evaluation import TensorSet, evaluate
    from federation.training.models import build_model

    with node_session(ctx.home) as home:
        gov = _governor(home, ctx)
        auth = gov.authorise(params.permit, app_hash=ctx.app_hash, run_id=ctx.run_id,
                             dataset_id=params.dataset_id or None)
        cohort = gov.cohort(auth, "test")
        images, labels, _ = load_images(home.db, auth.dataset.dataset_id, "test",
                                      cohort.pseudonyms)
        gov.audit_read(auth, split="test", records=len(labels), excluded=cohort.excluded,
                       purpose="evaluate")
        try:
            _check_shape(images, labels, params)
        except Refusal as refusal:
            gov.refuse(refusal, run_id=ctx.run_id, permit_id=auth.claims.permit_id,
                       stage="shape")
            raise
    if len(labels) == 0:
        return {"loss": 0.0, "accuracy": 0.0, "auc": float("nan"), "num-examples": 0}
    torch.set_num_threads(1)
    model = build_model(params.model, params_spec(params))
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
    out = evaluate(model, TensorSet(images_to_tensor(images), torch.from_numpy(labels)))
    return {k: float(v) if not (isinstance(v, float) and math.isnan(v)) else float("nan")
            for k, v in out.items()}


def audit_task(ctx: NodeContext, params: RunParams, *, weights: Weights,
               max_per_label: int = 300) -> dict[str, Any]:
    """Empirical membership-inference audit of the final model on this node's own data.

    A loss-threshold attack tries to tell training members (the consented train split)
    from held-out records (the consented val and test splits) by the model's loss.
    Samples are balanced label by label, so a label mix that differs between splits
    is not mistaken for leakage. Only the attack's advantage (max TPR − FPR), its AUC
    and the advantage that chance alone reaches at this sample size (the 95 % critical
    value of the two-sample Kolmogorov–Smirnov statistic) leave the node.
    """
    import torch
    from sklearn.metrics import roc_auc_score, roc_curve

    from federation.training.models import build_model

    with node_session(ctx.home) as home:
        gov = _governor(home, ctx)
        auth = gov.authorise(params.permit, app_hash=ctx.app_hash, run_id=ctx.run_id,
                             dataset_id=params.dataset_id or None)
        dataset = auth.dataset.dataset_id
        members = gov.cohort(auth, "train")
        x_in, y_in, _ = load_images(home.db, dataset, "train", members.pseudonyms)
        outside, excluded = [], members.excluded
        for split in ("val", "test"):
            cohort = gov.cohort(auth, split)
            outside.append(load_images(home.db, dataset, split, cohort.pseudonyms)[:2])
            excluded += cohort.excluded
        x_out = np.concatenate([o[0] for o in outside if len(o[1])] or [x_in[:0]])
        y_out = np.concatenate([o[1] for o in outside])
        gov.audit_read(auth, split="train+val+test", records=len(y_in) + len(y_out),
                       excluded=excluded, purpose="privacy-audit")
    rng = np.random.default_rng(params.seed)
    pick_in, pick_out = [], []
    for label in np.intersect1d(y_in, y_out):
        both = (np.flatnonzero(y_in == label), np.flatnonzero(y_out == label))
        k = min(len(both[0]), len(both[1]), max_per_label)
        pick_in.append(rng.choice(both[0], k, replace=False))
        pick_out.append(rng.choice(both[1], k, replace=False))
    pick_in = np.concatenate(pick_in or [np.zeros(0, int)]).astype(int)
    pick_out = np.concatenate(pick_out or [np.zeros(0, int)]).astype(int)
    n = len(pick_in)
    hospital = auth.dataset.node_id
    if n < 20:
        return {"hospital-id": hospital, "mia-advantage": float("nan"), "mia-records": n}
    torch.set_num_threads(1)
    model = build_model(params.model, params_spec(params))
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
    model.eval()
    with torch.no_grad():
        x = images_to_tensor(np.concatenate([x_in[pick_in], x_out[pick_out]]))
        y = torch.from_numpy(np.concatenate([y_in[pick_in], y_out[pick_out]]))
        losses = torch.nn.functional.cross_entropy(model(x), y, reduction="none").numpy()
    is_member = np.concatenate([np.ones(n), np.zeros(n)])
    fpr, tpr, _ = roc_curve(is_member, -losses)
    return {"hospital-id": hospital, "mia-advantage": float(np.max(tpr - fpr)),
            "mia-auc": float(roc_auc_score(is_member, -losses)), "mia-records": n,
            "mia-chance-advantage": float(1.358 * np.sqrt(2 / n))}


def close_task(ctx: NodeContext, params: RunParams) -> dict[str, float]:
    """The run ended: release whatever ε its reservation did not charge."""
    with node_session(ctx.home) as home:
        gov = _governor(home, ctx)
        auth = gov.authorise(params.permit, app_hash=ctx.app_hash, run_id=ctx.run_id,
                             dataset_id=params.dataset_id or None)
        res = gov.ledger.reservation(ctx.run_id, auth.claims.permit_id, auth.dataset.dataset_id)
        if res is None:
            return {"released": 0.0, "charged": 0.0}
        released = gov.ledger.release(res, reason="run ended")
        hist = gov.ledger.charges(run_id=ctx.run_id, dataset_id=auth.dataset.dataset_id)
        charged = max((c["epsilon_run"] for c in hist), default=0.0)
        return {"released": float(released), "charged": float(charged)}
