"""The membership-inference audit is a statistical test: noise does not block a release,
an overfit model does, a DP model of the same data does not (real PneumoniaMNIST)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from federation.training.data import images_to_tensor
from federation.training.dp import DPTrainer, plan_dp
from federation.training.membership import (
    balanced_by_label,
    best_advantage,
    membership_audit,
)
from federation.training.models import ModelSpec, build_model
from tre.core.disclosure import dp_advantage_bound
from tre.core.settings import CommonSettings
from tre.portal.services.airlock import check_membership_inference

LIMIT = 0.1


def attestation(audit, node="hospital-a", epsilon=8.0):
    return {"node_id": node, "epsilon": epsilon, "delta": 1e-5,
            **{k.replace("-", "_"): v for k, v in audit.as_metrics().items()
               if k not in ("mia-attack", "mia-records")}}


def test_advantage_is_the_best_threshold_and_ties_are_not_split():
    member = np.array([True, True, False, False])
    assert best_advantage(member, np.array([4.0, 3.0, 2.0, 1.0])) == 1.0
    assert best_advantage(member, np.array([1.0, 1.0, 1.0, 1.0])) == 0.0
    assert best_advantage(member, np.array([2.0, 1.0, 2.0, 1.0])) == 0.0


def test_scores_unrelated_to_membership_pass_even_when_the_point_estimate_is_high():
    rng = np.random.default_rng(7)
    labels = np.repeat([0, 1], 150)
    member = np.tile(np.repeat([True, False], 75), 2)
    worst = max((membership_audit(rng.normal(size=300), rng.uniform(size=300), labels,
                                  member, seed=s, resamples=300) for s in range(5)),
                key=lambda a: a.advantage)
    # at 150 per side chance alone reaches ~0.1: the point estimate may cross the limit
    assert worst.chance > 0.05 and worst.p_value > 0.01
    assert worst.ci_low < LIMIT < worst.ci_high + 0.2
    assert check_membership_inference([attestation(worst)], LIMIT)["passed"]


def test_a_label_mix_is_not_leakage_and_a_shift_is():
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], 400)
    member = np.tile(np.repeat([True, False], 200), 2)
    by_label = labels * 2.0 + rng.normal(size=800)  # the score knows the label, not membership
    quiet = membership_audit(by_label, rng.uniform(size=800), labels, member, resamples=300)
    assert quiet.ci_low < LIMIT
    leaky = membership_audit(by_label - member * 1.5, rng.uniform(size=800), labels, member,
                             resamples=300)
    assert leaky.attack == "loss" and leaky.ci_low > 0.2 and leaky.p_value < 0.01
    blocked = check_membership_inference([attestation(leaky)], LIMIT)
    assert not blocked["passed"] and "TOO HIGH" in blocked["detail"]


def test_the_dp_bound_is_vacuous_at_epsilon_8_and_says_so():
    assert dp_advantage_bound(8.0, 1e-5) > 0.99
    assert dp_advantage_bound(0.1, 0.0) == pytest.approx(np.tanh(0.05))
    detail = check_membership_inference([{"node_id": "h", "mia_advantage": 0.02,
                                          "mia_ci_low": 0.0, "mia_ci_high": 0.05,
                                          "epsilon": 8.0, "delta": 1e-5}], LIMIT)["detail"]
    assert "allows up to 0.999" in detail and "loose" in detail


@pytest.fixture(scope="module")
def small_pneumonia():
    """240 real images on each side: members from the train split, non-members from val
    (drawn like train; PneumoniaMNIST's test split comes from elsewhere)."""
    data = np.load(CommonSettings().data_root / "medmnist" / "pneumoniamnist.npz")
    rng = np.random.default_rng(0)

    def take(split: str, per_label: int):
        x, y = data[f"{split}_images"], data[f"{split}_labels"].ravel().astype(np.int64)
        idx = np.concatenate([rng.choice(np.flatnonzero(y == c), per_label, replace=False)
                              for c in (0, 1)])
        return x[idx], y[idx]

    return take("train", 120), take("val", 120)


def audit_model(model, members, nonmembers):
    (x_in, y_in), (x_out, y_out) = members, nonmembers
    pick_in, pick_out = balanced_by_label(y_in, y_out, np.random.default_rng(0))
    x = images_to_tensor(np.concatenate([x_in[pick_in], x_out[pick_out]]))
    y = torch.from_numpy(np.concatenate([y_in[pick_in], y_out[pick_out]]))
    model.eval()
    with torch.no_grad():
        logits = model(x)
        losses = torch.nn.functional.cross_entropy(logits, y, reduction="none").numpy()
        confidence = torch.softmax(logits, 1).max(1).values.numpy()
    member = np.r_[np.ones(len(pick_in), bool), np.zeros(len(pick_out), bool)]
    return membership_audit(losses, confidence, y.numpy(), member, resamples=400)


def test_an_overfit_model_is_blocked_and_a_dp_model_of_the_same_data_is_not(small_pneumonia):
    members, nonmembers = small_pneumonia
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x, y = images_to_tensor(members[0]), torch.from_numpy(members[1])
    spec = ModelSpec(in_channels=1, image_size=28, num_classes=2)

    overfit = build_model("cnn-gn", spec, seed=0)
    opt = torch.optim.Adam(overfit.parameters(), lr=3e-3)
    overfit.train()
    for _ in range(150):  # full batch, no DP: it memorises its 240 images
        opt.zero_grad()
        torch.nn.functional.cross_entropy(overfit(x), y).backward()
        opt.step()
    leaky = audit_model(overfit, members, nonmembers)
    verdict = check_membership_inference([attestation(leaky, epsilon=1e9)], LIMIT)
    assert leaky.ci_low > LIMIT and leaky.p_value < 0.01, leaky
    assert not verdict["passed"], verdict

    plan = plan_dp(num_examples=len(y), batch_size=32, local_epochs=10, rounds=1,
                   target_epsilon=8.0, delta=1e-5)
    trainer = DPTrainer(build_model("cnn-gn", spec, seed=0), x, y, plan, [], lr=0.1, seed=0)
    trainer.train_round(10)
    private = audit_model(trainer.module(), members, nonmembers)
    assert private.advantage < leaky.advantage
    assert check_membership_inference([attestation(private)], LIMIT)["passed"], private
