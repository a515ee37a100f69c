"""The AUC's standard error a node sends (Hanley–McNeil, from its AUC and class counts)
matches a bootstrap over records, and the ServerApp combines the nodes' errors for the
weighted mean it reports."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import MetricRecord, RecordDict

from federation.apps.server import weighted_mean_finite
from federation.training.evaluation import binary_auc, hanley_mcneil_se

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("shift", [0.5, 1.5])
def test_the_standard_error_matches_a_bootstrap_over_records(shift: float) -> None:
    rng = np.random.default_rng(0)
    positive = np.r_[np.ones(150, bool), np.zeros(250, bool)]
    scores = rng.normal(size=400) + shift * positive
    auc = binary_auc(positive, scores)
    boot = []
    for _ in range(1000):  # stratified: the class counts are fixed, as on a test split
        pick = np.r_[rng.choice(150, 150), 150 + rng.choice(250, 250)]
        boot.append(binary_auc(positive[pick], scores[pick]))
    assert hanley_mcneil_se(auc, 150, 250) == pytest.approx(np.std(boot), rel=0.15)


def test_no_standard_error_without_both_classes_or_an_auc() -> None:
    assert math.isnan(hanley_mcneil_se(0.8, 0, 40))
    assert math.isnan(hanley_mcneil_se(float("nan"), 20, 40))


def test_the_server_combines_node_errors_for_the_weighted_mean() -> None:
    def node(n: int, auc: float, se: float) -> RecordDict:
        return RecordDict({"metrics": MetricRecord({"num-examples": n, "auc": auc,
                                                    "auc-se": se})})

    out = weighted_mean_finite([node(100, 0.9, 0.02), node(300, 0.8, 0.04),
                                node(50, float("nan"), float("nan"))], "num-examples")
    assert out["auc"] == pytest.approx((100 * 0.9 + 300 * 0.8) / 400)
    assert out["auc-se"] == pytest.approx(math.hypot(100 * 0.02, 300 * 0.04) / 400)
    assert out["num-examples"] == 450
