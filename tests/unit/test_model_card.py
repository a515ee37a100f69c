"""The model card as a pure function of the run report, permit and request."""

from __future__ import annotations

import copy

import pytest

from tests.airlock.test_model_card import REPORT
from tre.portal.services.model_card import build, wilson

pytestmark = pytest.mark.unit

PERMIT = {"id": "pmt_1", "request_id": "req_1", "claims": {
    "purpose": "ai_training", "app_id": "pneumonia-cnn", "app_hash": "ab" * 32,
    "datasets": [{"node_id": h, "dataset_id": "pneumonia", "epsilon_cap": 8.0,
                  "delta_cap": 1e-5} for h in ("hospital-a", "hospital-b")]}}


def card(report):
    return build(report, PERMIT, {"title": "t"}, run_id="run_1", model_file=None,
                 model_sha256=None, k=10)


def test_the_metrics_are_the_final_rounds_or_none():
    assert card(REPORT)["metrics"]["auc"]["value"] == REPORT["rounds"][-1]["evaluate"]["auc"]
    report = copy.deepcopy(REPORT)
    report["rounds"][-1]["evaluate"] = None  # round 1's figures are another model's
    metrics = card(report)["metrics"]
    assert metrics["test_examples"] is None
    assert [metrics[m]["value"] for m in ("auc", "accuracy", "loss")] == [None] * 3
    assert metrics["accuracy"]["ci95"] is None
    assert any("no federated evaluation" in item for item in card(report)["limitations"])


def test_a_withheld_accuracy_gets_no_interval():
    report = copy.deepcopy(REPORT)
    report["rounds"][-1]["evaluate"].update(accuracy=None, auc=None, loss=None)
    assert card(report)["metrics"]["accuracy"] == {"value": None, "ci95": None,
                                                   "interval_method": None}


def test_the_wilson_interval_stays_in_zero_one_and_is_not_degenerate_at_the_ends():
    low, high = wilson(1.0, 625)
    assert high == 1.0 and 0.99 < low < 1.0
    low, high = wilson(0.0, 20)
    assert low == 0.0 and 0.1 < high < 0.2


def test_the_auc_interval_comes_from_the_nodes_standard_error_or_is_said_to_be_missing():
    auc = card(REPORT)["metrics"]["auc"]
    assert auc["interval_method"].startswith("hanley-mcneil")
    assert auc["ci95"][0] < auc["value"] < auc["ci95"][1]
    assert any("Hanley–McNeil" in item for item in card(REPORT)["limitations"])
    report = copy.deepcopy(REPORT)
    del report["rounds"][-1]["evaluate"]["auc-se"]  # a multi-class AUC, or an older node
    auc = card(report)["metrics"]["auc"]
    assert auc["ci95"] is None and "standard error" in auc["no_interval_because"]
    assert any("The AUC has no interval" in item for item in card(report)["limitations"])
    report["rounds"][-1]["evaluate"].update(auc=0.99, **{"auc-se": 0.02})
    assert card(report)["metrics"]["auc"]["ci95"][1] == 1.0
