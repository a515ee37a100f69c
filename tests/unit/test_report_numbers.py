"""The airlock reads a run report's numbers by the report's format, not by their look."""

from __future__ import annotations

import pytest

from tre.portal.services import airlock

pytestmark = pytest.mark.unit


def test_a_perfect_evaluation_is_a_statistic_and_its_example_count_a_count():
    report = {"rounds": [{"round": 1, "evaluate": {"auc": 1.0, "accuracy": 1.0, "loss": 0.0,
                                                   "num-examples": 5}}]}
    kinds = {path: kind for path, _, kind in airlock.classify("run", report)}
    assert kinds["run.rounds.#.evaluate.auc"] == "statistic"
    assert kinds["run.rounds.#.evaluate.accuracy"] == "statistic"
    assert kinds["run.rounds.#.evaluate.num-examples"] == "count"  # still checked for < k
