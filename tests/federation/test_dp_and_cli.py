"""DP accounting across fresh processes, models of the catalogue, and the budget CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from access_control.permits import PermitKeyRing
from federation.launch.fab import fab_hash
from federation.launch.models import MODEL_KINDS
from federation.node.home import node_session
from federation.node.ledger import PrivacyLedger
from federation.training.dp import DPTrainer, epsilon_of, plan_dp
from federation.training.models import MODELS, ModelSpec, build_model, model_kind

from .helpers import make_home, populate

pytestmark = pytest.mark.unit


def test_plan_meets_target_over_whole_run() -> None:
    plan = plan_dp(num_examples=1500, batch_size=128, local_epochs=2, rounds=5,
                   target_epsilon=8.0, delta=1e-5)
    hist = [(plan.noise_multiplier, plan.sample_rate, plan.steps_per_round)] * plan.rounds
    eps = epsilon_of("rdp", hist, 1e-5)
    assert 7.9 < eps <= 8.0


def test_rebuilt_accountant_matches_one_long_run_and_fresh_one_under_reports() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(200, 1, 28, 28), torch.randint(0, 2, (200,))
    plan = plan_dp(num_examples=200, batch_size=50, local_epochs=1, rounds=3,
                   target_epsilon=3.0, delta=1e-5)
    history: list[tuple[float, float, int]] = []
    reported = []
    for _ in range(3):  # each round in a "fresh process": a new engine from the history
        model = build_model("cnn-gn", ModelSpec(), seed=0)
        trainer = DPTrainer(model, x, y, plan, history, lr=0.1)
        res = trainer.train_round(1)
        history.append((plan.noise_multiplier, plan.sample_rate, res.steps))
        reported.append(res.epsilon)
    whole = epsilon_of("rdp", [(plan.noise_multiplier, plan.sample_rate,
                                3 * plan.steps_per_round)], 1e-5)
    assert reported[-1] == pytest.approx(whole, rel=1e-6)
    assert reported[0] < reported[1] < reported[2] <= 3.0
    fresh = epsilon_of("rdp", history[-1:], 1e-5)
    assert fresh < reported[-1] * 0.75  # what a fresh engine per round would claim


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_catalogue_models_build(model_id: str) -> None:
    spec = ModelSpec(in_features=30)
    net = build_model(model_id, spec, seed=1)
    x = torch.randn(3, 1, 28, 28) if model_kind(model_id) == "imaging" else torch.randn(3, 30)
    assert net(x).shape == (3, 2)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_the_torch_free_registry_is_the_catalogue() -> None:
    """The portal checks model ids against `federation.launch.models` (no torch there):
    it must name exactly the models nodes can build, with the same dataset kinds."""
    assert {model_id: kind for model_id, (kind, _) in MODELS.items()} == MODEL_KINDS


def test_fab_hash_is_stable() -> None:
    assert fab_hash() == fab_hash()
    assert len(fab_hash()) == 64


def test_budget_cli(tmp_path: Path) -> None:
    from tre.cli.main import app

    ring = PermitKeyRing.load_or_create(tmp_path / "ring.json")
    home = make_home(tmp_path, "hospital-a", ring)
    populate(home, "pneu", 0, 3, limit=20)
    home.db.close()
    runner = CliRunner()
    out = runner.invoke(app, ["node", "budget", "set", "pneu", "5", "--home", str(home.path)])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["node", "budget", "show", "--json", "--home", str(home.path)])
    assert out.exit_code == 0, out.output
    (row,) = json.loads(out.output)
    assert row["epsilon_total"] == 5 and row["epsilon_remaining"] == 5
    out = runner.invoke(app, ["node", "budget", "set", "nope", "5", "--home", str(home.path)])
    assert out.exit_code != 0
    assert "tre node status" in out.output
    # a budget that bounds nothing is refused, and the one set stays
    for bad in ("nan", "inf", "1e9", "-0.5"):
        out = runner.invoke(app, ["node", "budget", "set", "--home", str(home.path), "pneu",
                                  "--", bad])
        assert out.exit_code != 0 and "epsilon must be a number from 0 to 1000" in out.output
    out = runner.invoke(app, ["node", "budget", "show", "--json", "--home", str(home.path)])
    assert json.loads(out.output)[0]["epsilon_total"] == 5
    with node_session(home.path) as h, pytest.raises(ValueError, match="total ε"):
        PrivacyLedger(h.db, h.audit, actor="t").set_budget("pneu", float("nan"))
