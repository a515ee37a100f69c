"""What a node does for one message of a governed run, independent of Flower's types.

`train_task`, `evaluate_task`, `calibrate_task`, `audit_task` and `close_task` are the only paths by
which the training app touches a node's data; each goes through the node's gate
(`federation.node.gate`: permit, scope, app hash, consent, disclosure, ε) and reads
records only inside it, after every check passed.
The ClientApp is a thin adapter over these, so tests drive the same code.
Images and clinical tables take the same path: only where records are found
(`_subjects`) and read (`_read`) depends on the model's kind.

torch and Opacus are imported inside the functions that train or evaluate:
every message runs in a fresh process, and a refusal or a `close` should not
wait for a deep-learning stack to load.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from federation.launch.columns import TableSpec
from federation.launch.models import MODEL_KINDS
from federation.launch.params import RunParams
from federation.node.authorisation import Authorisation, RunPermit
from federation.node.consent import ConsentFilter, RegimeConsentFilter
from federation.node.data import (
    clinical_variables,
    load_images,
    load_table,
    table_split_pseudonyms,
)
from federation.node.errors import DataError
from federation.node.gate import (
    Action,
    BelowThreshold,
    Budget,
    Candidates,
    ConsentedCohort,
    Gate,
    Query,
)
from federation.node.home import NodeHome, node_session
from federation.node.ledger import Reservation
from federation.node.refusal import Refusal
from federation.node.revocations import RevocationList
from federation.node.store import dataset_kind
from federation.training.data import (
    inputs_to_tensor,
    one_record_per_person,
    split_pseudonyms,
    standardise,
)
from tre.core.disclosure import Disclosed, disclose, disclose_statistic, is_suppressed

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
    excluded_by_consent: Disclosed
    """How many records consent kept out, as disclosure control lets it leave ("<10")."""


def _gate(home: NodeHome, ctx: NodeContext) -> Gate:
    cf = ctx.consent_filter
    return Gate(home, consent_filter=cf if hasattr(cf, "filter") else cf(home))


def _permit(ctx: NodeContext, params: RunParams) -> RunPermit:
    return RunPermit(params.permit, ctx.app_hash, ctx.run_id, revocations=ctx.revocations,
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
                     num_classes=p.num_classes, in_features=p.table().in_features)


def _check_shape(images: np.ndarray, labels: np.ndarray, p: RunParams) -> None:
    """Refuse inputs the run's model cannot take (table rows fit by construction)."""
    if len(labels) == 0:
        return
    if images.ndim > 2 and images.shape[1:] != (p.image_size, p.image_size, p.in_channels):
        raise Refusal("data-shape", f"images here are {images.shape[1:]} (H, W, C), the run "
                      f"expects {(p.image_size, p.image_size, p.in_channels)}")
    if int(labels.max()) >= p.num_classes:
        hint = ("" if images.ndim > 2 else ": name the label's classes (label=name=a|b) or "
                "binarise it at a threshold (label=name>number)")
        raise Refusal("data-shape", f"labels here go up to {int(labels.max())}, the run "
                      f"expects {p.num_classes} classes{hint}")


def _subjects(params: RunParams, *splits: str) -> Candidates:
    """The authorised dataset's subjects with a labelled study (or table row) in `splits`,
    once the dataset is found fit for the run's model (`_table_columns`)."""
    def candidates(home: NodeHome, grant: Any) -> dict[str, list[str]]:
        ds = grant.dataset_id
        table = _table_columns(home, ds, params)
        found = [split_pseudonyms(home.db, ds, split) if table is None
                 else table_split_pseudonyms(home.db, ds, split, table.label)
                 for split in splits]
        return {ds: sorted(set().union(*found))}
    return candidates


def _table_columns(home: NodeHome, dataset_id: str, params: RunParams) -> TableSpec | None:
    """The run's table columns, checked against the dataset (None: an imaging run).
    Refuses, before anything is read or spent, a dataset of the other kind and a named
    variable the dataset lacks or holds with the other kind (text vs numeric)."""
    wanted, kind = MODEL_KINDS[params.model], dataset_kind(home, dataset_id)
    if kind != wanted:
        raise Refusal("dataset-kind", f"model {params.model!r} trains on {wanted} data; "
                      f"dataset {dataset_id!r} is {kind}")
    if wanted == "imaging":
        return None
    table = params.table()
    if not table.features or table.label is None:
        raise Refusal("no-columns", f"model {params.model!r} trains on a table: the run "
                      "names its columns (run config `features` and `label`)")
    held = clinical_variables(home.db, dataset_id)
    for col in (*table.features, table.label):
        if col.name not in held:
            raise Refusal("missing-column",
                          f"dataset {dataset_id!r} has no variable {col.name!r}")
        named = "text" if col.categories else "numeric"
        if held[col.name] != named:
            raise Refusal("column-kind", f"variable {col.name!r} of {dataset_id!r} is "
                          f"{held[col.name]}, the run reads it as {named}"
                          + (": name its categories (name=a|b)" if named == "numeric"
                             else ""))
    return table


def _read(home: NodeHome, cohort: ConsentedCohort, split: str, params: RunParams
          ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The consented cohort's records of `split` as model inputs (images N×H×W×C, or
    table rows N×F standardised at this node: `standardise`), labels, and each record's
    person. Refusal `data-shape` for a label that is not a class index."""
    if MODEL_KINDS[params.model] == "imaging":
        return load_images(home.db, cohort.dataset, split, cohort.pseudonyms,
                           size=params.image_size)
    table = params.table()
    try:
        x, y, persons = load_table(home.db, cohort.dataset, split, cohort.pseudonyms, table)
    except DataError as exc:
        raise Refusal("data-shape", str(exc)) from exc
    return standardise(x, np.array(table.numeric, dtype=bool)), y, persons


@dataclass
class TrainRound:
    """The ε of one training round (the gate's `Spend`): round 1 (or the node's first
    round of the run) plans the noise for all remaining rounds and reserves their ε;
    every round charges its steps before its data is read; the reservation is released
    once the planned rounds are done."""

    params: RunParams
    server_round: int
    plan: DPPlan | None = None
    history: list[tuple[float, float, int]] = field(default_factory=list)
    epsilon: float = 0.0
    """The run's ε after this round."""
    targets: tuple[float, float] = (0.0, 0.0)

    def admit(self, auth: Authorisation) -> None:
        self.targets = _targets(auth, self.params)

    def spend(self, budget: Budget, cohort: ConsentedCohort) -> Reservation:
        from federation.training.dp import plan_dp, steps_per_epoch

        p, n = self.params, len(cohort.pseudonyms)
        res = budget.reservation()
        if res is None:
            eps_target, delta = self.targets
            res = budget.reserve(plan_dp(
                num_examples=n, batch_size=p.batch_size, local_epochs=p.local_epochs,
                rounds=max(1, p.rounds - self.server_round + 1), target_epsilon=eps_target,
                delta=delta, max_grad_norm=p.max_grad_norm, accountant=p.accountant,
            ))
        self.plan = _plan_from(res, p, n)
        if self.plan.steps_per_round != steps_per_epoch(n, p.batch_size) * p.local_epochs:
            budget.release(res, reason="cohort changed")
            raise Refusal("cohort-changed",
                          "the consented cohort changed size since the run was planned; "
                          "its noise no longer matches the reservation")
        self.history = budget.history(res)
        self.epsilon = budget.charge(res, server_round=self.server_round,
                                     steps=res.steps_per_round)
        return res

    def settle(self, budget: Budget, res: Reservation) -> None:
        if len(self.history) + 1 >= res.rounds:
            budget.release(res, reason="planned rounds complete")


def train_task(
    ctx: NodeContext, params: RunParams, *, server_round: int, weights: Weights | None,
    proximal_mu: float = 0.0,
) -> TrainOutcome:
    """One round of governed DP training at this node, through the gate (`TrainRound`
    spends its ε). Raises Refusal (already audited) when any check fails: nothing was read.
    """
    import torch

    from federation.training.dp import DPTrainer

    round_budget = TrainRound(params, server_round)
    action = Action(
        f"train round {server_round}", "train", _subjects(params, "train"),
        below_threshold=BelowThreshold.REFUSE, require_records=True, spend=round_budget,
        query=None if weights is None else Query("train-input", server_round,
                                                 weights_digest(weights)))
    with node_session(ctx.home) as home, _gate(home, ctx).open(
            action, None, params.dataset_id or None, _permit(ctx, params)) as cohort:
        inputs, labels, persons = _read(home, cohort, "train", params)
        inputs, labels = one_record_per_person(inputs, labels, persons,
                                               seed=params.seed * 1000 + server_round)
        cohort.read(len(labels))
        _check_shape(inputs, labels, params)
        hospital, k = home.config.hospital_id, home.config.suppression_k
    # The store is closed from here on: training holds only the consented tensors.
    res, plan = cohort.reservation, round_budget.plan
    model = _model(params, weights, seed=params.seed)
    global_params = [p.detach().clone() for p in model.parameters()]
    trainer = DPTrainer(model, inputs_to_tensor(inputs), torch.from_numpy(labels), plan,
                        round_budget.history, lr=params.lr, momentum=params.momentum,
                        grad_sample_mode=params.grad_sample_mode,
                        seed=params.seed * 1000 + server_round)
    started = time.perf_counter()
    trainer.train_round(params.local_epochs, proximal_mu=proximal_mu,
                        global_params=global_params)
    train_seconds = time.perf_counter() - started
    state = {k: v.detach().cpu().numpy() for k, v in trainer.module().state_dict().items()}
    # Only what is DP-accounted or disclosed leaves: the example count rounded and
    # perturbed like a feasibility count (it weights FedAvg), no training loss.
    metrics = {
        "num-examples": int(cohort.shown),
        "train-seconds": round(train_seconds, 1),  # the node's timing (bench: overhead)
        "epsilon": round_budget.epsilon,
        "epsilon-target": res.epsilon,
        "delta": res.delta,
        "noise-multiplier": res.noise_multiplier,
        "sample-rate": res.sample_rate,
        "steps": res.steps_per_round,
    }
    return TrainOutcome(state, metrics, hospital, cohort.dataset,
                        disclose(cohort.excluded, k=k))


def _model(params: RunParams, weights: Weights | None, *, seed: int | None = None) -> Any:
    """The run's model on one CPU thread, with `weights` loaded when given."""
    import torch

    from federation.training.models import build_model

    torch.set_num_threads(1)
    model = build_model(params.model, params_spec(params), seed=seed)
    if weights is not None:
        model.load_state_dict({name: torch.from_numpy(np.asarray(v))
                               for name, v in weights.items()})
    return model


def weights_digest(weights: Weights) -> str:
    """SHA-256 of a model's tensors (names, dtypes, shapes, bytes) in name order."""
    h = hashlib.sha256()
    for name in sorted(weights):
        arr = np.ascontiguousarray(weights[name])
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _plan_from(res: Reservation, params: RunParams, n: int) -> DPPlan:
    from federation.training.dp import DPPlan

    return DPPlan(
        target_epsilon=res.epsilon, delta=res.delta, accountant=res.accountant,
        noise_multiplier=res.noise_multiplier, sample_rate=res.sample_rate,
        steps_per_round=res.steps_per_round, rounds=res.rounds,
        max_grad_norm=res.max_grad_norm, batch_size=params.batch_size, num_examples=n,
    )


def evaluate_task(ctx: NodeContext, params: RunParams, *, server_round: int, weights: Weights
                  ) -> dict[str, float]:
    """Evaluate the global model on this node's consented test split. What leaves passes
    the node's disclosure control: the example count as a feasibility count is shown,
    loss, accuracy, AUC and the AUC's standard error rounded, and withheld (NaN, weight
    0) under k records."""
    import torch

    from federation.training.evaluation import TensorSet, evaluate

    action = Action("evaluate", "test", _subjects(params, "test"),
                    below_threshold=BelowThreshold.WITHHOLD,
                    query=Query("evaluate", server_round, weights_digest(weights)))
    with node_session(ctx.home) as home, _gate(home, ctx).open(
            action, None, params.dataset_id or None, _permit(ctx, params)) as cohort:
        if cohort.withheld:
            return {"loss": float("nan"), "accuracy": float("nan"), "auc": float("nan"),
                    "auc-se": float("nan"), "num-examples": 0}
        inputs, labels, _ = _read(home, cohort, "test", params)
        cohort.read(len(labels))
        _check_shape(inputs, labels, params)
        k = home.config.suppression_k
    model = _model(params, weights)
    out = evaluate(model, TensorSet(inputs_to_tensor(inputs), torch.from_numpy(labels)))
    return {"loss": disclose_statistic(out["loss"], len(labels), k=k),
            "accuracy": disclose_statistic(out["accuracy"], len(labels), k=k),
            "auc": disclose_statistic(out["auc"], len(labels), k=k),
            "auc-se": disclose_statistic(out["auc-se"], len(labels), k=k, digits=4),
            "num-examples": int(cohort.shown)}


def calibrate_task(ctx: NodeContext, params: RunParams, *, weights: Weights
                   ) -> dict[str, Any]:
    """Score the final model at the fixed decision thresholds (`THRESHOLDS`) on this
    node's consented val split, for the server to pick one over all nodes
    (`pick_threshold`), and on its test split, for the accuracy at the one picked
    (`accuracy_at`). What leaves, per split: the disclosed example count, the share of
    positives and each threshold's true-positive and true-negative rate, each rounded
    like any statistic and withheld (NaN) when fewer than k records stand behind it."""
    from federation.training.evaluation import positive_scores, threshold_rates

    if params.num_classes != 2:
        raise Refusal("not-binary", "a decision threshold is calibrated for two classes, "
                      f"the run has {params.num_classes}")
    action = Action("calibrate", "val+test", _subjects(params, "val", "test"),
                    query=Query("calibrate", 0, weights_digest(weights)))
    with node_session(ctx.home) as home, _gate(home, ctx).open(
            action, None, params.dataset_id or None, _permit(ctx, params)) as cohort:
        splits = {split: _read(home, cohort, split, params)[:2] for split in ("val", "test")}
        cohort.read(sum(len(y) for _, y in splits.values()))
        k = home.config.suppression_k
    model = _model(params, weights)
    out: dict[str, Any] = {}
    for split, (inputs, labels) in splits.items():
        _check_shape(inputs, labels, params)
        n, n_pos = len(labels), int((labels == 1).sum())
        rates = threshold_rates(labels, positive_scores(model, inputs_to_tensor(inputs))
                                if n else np.zeros(0))
        prefix = "" if split == "val" else "test-"
        shown = disclose(n, k=k)
        out.update({
            f"{prefix}num-examples": 0 if is_suppressed(shown) else int(shown),
            f"{prefix}prevalence": disclose_statistic(rates["prevalence"], n, k=k),
            f"{prefix}tpr": [disclose_statistic(r, n_pos, k=k) for r in rates["tpr"]],
            f"{prefix}tnr": [disclose_statistic(r, n - n_pos, k=k) for r in rates["tnr"]]})
    return out


def audit_task(ctx: NodeContext, params: RunParams, *, weights: Weights) -> dict[str, Any]:
    """Empirical membership-inference audit of the final model on this node's own data.

    The attacks try to tell training members (the consented train split) from held-out
    records of the consented val split, label by label, on as many records as the node
    has (`federation.training.membership`). Only val: it is drawn from the same pool as
    train, while a source's test split may come from elsewhere (PneumoniaMNIST's does),
    and an attack on such records measures that shift, not membership: on
    PneumoniaMNIST val against test, neither of them trained on, reaches an advantage
    of 0.11 (p = 0.003). Only the audit's figures leave: the advantage with its
    confidence interval and what chance alone reaches.
    """
    import torch

    from federation.training.membership import balanced_by_label, membership_audit

    action = Action("privacy-audit", "train+val", _subjects(params, "train", "val"),
                    query=Query("audit", 0, weights_digest(weights)))
    with node_session(ctx.home) as home, _gate(home, ctx).open(
            action, None, params.dataset_id or None, _permit(ctx, params)) as cohort:
        x_in, y_in, _ = _read(home, cohort, "train", params)
        x_out, y_out, _ = _read(home, cohort, "val", params)
        cohort.read(len(y_in) + len(y_out))
    pick_in, pick_out = balanced_by_label(y_in, y_out, np.random.default_rng(params.seed))
    hospital = cohort.authorisation.dataset.node_id
    if len(pick_in) < 20:
        return {"hospital-id": hospital, "mia-advantage": float("nan"),
                "mia-records": len(pick_in)}
    model = _model(params, weights)
    model.eval()
    x = inputs_to_tensor(np.concatenate([x_in[pick_in], x_out[pick_out]]))
    y = torch.from_numpy(np.concatenate([y_in[pick_in], y_out[pick_out]]))
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + 512]) for i in range(0, len(y), 512)])
        losses = torch.nn.functional.cross_entropy(logits, y, reduction="none").numpy()
        confidences = torch.softmax(logits, dim=1).max(dim=1).values.numpy()
    member = np.r_[np.ones(len(pick_in), bool), np.zeros(len(pick_out), bool)]
    audit = membership_audit(losses, confidences, y.numpy(), member, seed=params.seed)
    return {"hospital-id": hospital, **audit.as_metrics()}


def close_task(ctx: NodeContext, params: RunParams) -> dict[str, float]:
    """The run ended: release whatever ε its reservation did not charge."""
    with node_session(ctx.home) as home:
        budget = _gate(home, ctx).authorise(_permit(ctx, params), params.dataset_id or None)
        res = budget.reservation()
        if res is None:
            return {"released": 0.0, "charged": 0.0}
        released = budget.release(res, reason="run ended")
        hist = budget.ledger.charges(run_id=ctx.run_id, dataset_id=budget.auth.dataset_id)
        charged = max((c["epsilon_run"] for c in hist), default=0.0)
        return {"released": float(released), "charged": float(charged)}
