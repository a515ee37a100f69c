"""Issue 17's recipe options: server momentum and the calibrated decision threshold."""

from __future__ import annotations

import numpy as np
import pytest

from federation.training.evaluation import (
    THRESHOLDS,
    accuracy_at,
    pick_threshold,
    threshold_rates,
)
from federation.training.server_opt import ServerMomentum, TailAverage


def test_server_momentum_is_fedavg_by_default_and_accumulates_the_update():
    old, agg = {"w": np.array([1.0, 2.0], np.float32)}, {"w": np.array([0.5, 1.0], np.float32)}
    assert ServerMomentum().step(old, agg) is agg
    opt = ServerMomentum(lr=1.0, momentum=0.5)
    first = opt.step(old, agg)  # v = old - agg
    np.testing.assert_allclose(first["w"], [0.5, 1.0])
    assert first["w"].dtype == np.float32
    second = opt.step(first, {"w": np.array([0.0, 0.0], np.float32)})
    # v = 0.5 * [0.5, 1] + [0.5, 1] = [0.75, 1.5]; new = first - v
    np.testing.assert_allclose(second["w"], [-0.25, -0.5])
    np.testing.assert_allclose(ServerMomentum(lr=2.0).step(old, agg)["w"], [0.0, 0.0])


def test_the_tail_average_is_the_mean_of_the_last_rounds_models():
    rounds = [{"w": np.array([float(r)], np.float32), "n": np.array(r, np.int64)}
              for r in range(1, 6)]
    last = TailAverage(1)
    assert all(last.add(w) is w for w in rounds)  # the default releases the last model
    avg = TailAverage(3)
    seen = [avg.add(w) for w in rounds]
    np.testing.assert_allclose([s["w"][0] for s in seen], [1.0, 1.5, 2.0, 3.0, 4.0])
    assert seen[-1]["w"].dtype == np.float32
    assert int(seen[-1]["n"]) == 5  # a counter is not averaged


def test_threshold_rates_are_rates_over_the_split_only():
    y = np.array([1, 1, 1, 0, 0])
    scores = np.array([0.9, 0.6, 0.2, 0.4, 0.1])
    rates = threshold_rates(y, scores)
    assert rates["prevalence"] == pytest.approx(0.6)
    at = THRESHOLDS.index(0.5)
    assert rates["tpr"][at] == pytest.approx(2 / 3) and rates["tnr"][at] == 1.0
    one_class = threshold_rates(np.array([0, 0]), np.array([0.3, 0.7]))
    assert np.isnan(one_class["tpr"]).all() and one_class["tnr"][at] == 0.5


def test_the_threshold_is_picked_over_the_nodes_pooled_under_label_skew():
    """Node a holds only positives, node b only negatives: neither alone can pick a
    threshold, pooled they do, and it separates the classes (not the argmax rule's 0.5)."""
    rng = np.random.default_rng(0)
    pos, neg = rng.uniform(0.75, 1.0, 400), rng.uniform(0.55, 0.7, 100)
    a = {"num-examples": 400, **threshold_rates(np.ones(400, int), pos)}
    b = {"num-examples": 100, **threshold_rates(np.zeros(100, int), neg)}
    assert pick_threshold([a]) == pick_threshold([b]) == 0.5
    assert pick_threshold([a, b]) in (0.7, 0.75)
    # a node that withheld (below k) or sent NaN rates is left out, not a failure
    withheld = {"num-examples": 0, "prevalence": float("nan"),
                "tpr": [float("nan")] * len(THRESHOLDS), "tnr": [float("nan")] * len(THRESHOLDS)}
    assert pick_threshold([a, b, withheld]) == pick_threshold([a, b])


def test_accuracy_at_a_threshold_pools_the_nodes_rates():
    y_a, s_a = np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.3, 0.6])
    y_b, s_b = np.array([1, 1, 1, 1, 0, 0]), np.array([0.8, 0.7, 0.2, 0.9, 0.1, 0.2])
    nodes = [{"num-examples": len(y), **threshold_rates(y, s)}
             for y, s in ((y_a, s_a), (y_b, s_b))]
    pooled_y, pooled_s = np.r_[y_a, y_b], np.r_[s_a, s_b]
    got = accuracy_at(nodes, 0.5)
    assert got["accuracy"] == pytest.approx(((pooled_s >= 0.5) == (pooled_y == 1)).mean())
    assert got["balanced_accuracy"] == pytest.approx((4 / 6 + 3 / 4) / 2)
