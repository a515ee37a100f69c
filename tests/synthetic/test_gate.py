"""The release gate's arithmetic: each check, its figure, its threshold, its advice."""

from __future__ import annotations

import dataclasses

import pytest

from synthetic import GateThresholds, evaluate_gate
from synthetic.fidelity import FidelityReport, ModelScore, UtilityReport
from synthetic.privacy import AnonymeterRisk, DistanceSummary, PrivacyReport

pytestmark = pytest.mark.unit


def _report(**changes) -> PrivacyReport:
    base = PrivacyReport(
        n_train=400, n_holdout=170, n_synthetic=570,
        exact_copies=0, exact_copy_rate=0.0, holdout_copy_rate=0.0,
        dcr_synthetic=DistanceSummary(570, 0.42, 0.25, 0.46),
        dcr_holdout=DistanceSummary(170, 0.33, 0.21, 0.37),
        mia_auc=0.52, mia_advantage=0.04, mia_best_tpr_minus_fpr=0.08,
        mia_members=400, mia_nonmembers=170,
        singling_out=AnonymeterRisk(0.01, (0.0, 0.05)),
        linkability=AnonymeterRisk(0.0, (0.0, 0.04)),
        inference=AnonymeterRisk(0.03, (0.0, 0.1)),
    )
    return dataclasses.replace(base, **changes)


def test_a_clean_report_passes_with_every_check_listed():
    gate = evaluate_gate(_report())
    assert gate.passed
    assert [c.name for c in gate.checks] == [
        "exact_copies", "dcr_median_ratio", "dcr_p5_ratio", "mia_advantage",
        "singling_out_risk", "linkability_risk", "inference_risk"]
    assert "PASSED" in gate.summary()


@pytest.mark.parametrize(("changes", "failed"), [
    ({"exact_copies": 1, "exact_copy_rate": 1 / 570}, "exact_copies"),
    ({"dcr_synthetic": DistanceSummary(570, 0.30, 0.25, 0.3)}, "dcr_median_ratio"),
    ({"dcr_synthetic": DistanceSummary(570, 0.42, 0.01, 0.4)}, "dcr_p5_ratio"),
    ({"mia_advantage": 0.25, "mia_auc": 0.625}, "mia_advantage"),
    ({"singling_out": AnonymeterRisk(0.3, (0.2, 0.4))}, "singling_out_risk"),
    ({"linkability": AnonymeterRisk(0.5, (0.4, 0.6))}, "linkability_risk"),
    ({"inference": AnonymeterRisk(0.2, (0.1, 0.3))}, "inference_risk"),
])
def test_each_check_fails_alone_and_says_what_to_try(changes, failed):
    gate = evaluate_gate(_report(**changes))
    assert not gate.passed
    assert [c.name for c in gate.failed] == [failed]
    check = gate.failed[0]
    assert check.advice and check.value is not None
    line = check.line()
    assert line.startswith("[FAIL]") and "Try:" in line
    assert any(w in check.advice for w in ("fewer rows", "coarse", "another synthesizer"))
    assert "FAILED" in gate.summary() and failed in gate.summary()


def test_copies_are_judged_against_chance_coincidences():
    # on a coarse table real held-out rows coincide with training rows 5 % of the time
    report = _report(exact_copies=20, exact_copy_rate=0.035, holdout_copy_rate=0.05)
    assert evaluate_gate(report).passed
    report = _report(exact_copies=60, exact_copy_rate=0.105, holdout_copy_rate=0.05)
    assert [c.name for c in evaluate_gate(report).failed] == ["exact_copies"]


def test_thresholds_are_configurable():
    report = _report(mia_advantage=0.15)
    assert not evaluate_gate(report).passed
    assert evaluate_gate(report, GateThresholds(max_mia_advantage=0.2)).passed


def test_anonymeter_risk_indistinguishable_from_zero_does_not_fail_by_default():
    noisy = _report(inference=AnonymeterRisk(0.2, (0.0, 0.47)))
    gate = evaluate_gate(noisy)
    assert gate.passed
    assert "includes 0" in gate.checks[-1].description
    strict = GateThresholds(anonymeter_fail_insignificant=True)
    assert not evaluate_gate(noisy, strict).passed


def test_an_anonymeter_failure_fails_the_gate_unless_waived():
    broken = _report(linkability=AnonymeterRisk(None, error="anonymeter linkability attack "
                                                           "could not run: ValueError: x"))
    gate = evaluate_gate(broken)
    assert [c.name for c in gate.failed] == ["linkability_risk"]
    assert "could not run" in gate.failed[0].description
    assert evaluate_gate(broken, GateThresholds(require_anonymeter=False)).passed


def _fidelity(*, collapsed=(), scores=(0.9, 0.8), real_auc=0.86, synthetic_auc=0.84,
              error=None) -> FidelityReport:
    utility = UtilityReport(
        target="label", model="logistic_regression", n_test=100, n_train_real=300,
        n_train_synthetic=300,
        real=ModelScore(real_auc, 0.8) if real_auc is not None else None,
        synthetic=ModelScore(synthetic_auc, 0.7) if synthetic_auc is not None else None,
        error=error)
    return FidelityReport(
        quality_score=0.85, column_shapes=0.85, column_pair_trends=0.8,
        diagnostic_score=1.0, diagnostic={},
        column_scores=[{"column": f"c{i}", "metric": "KSComplement", "score": s}
                       for i, s in enumerate(scores)],
        worst_pairs=[], rows_real=300, rows_synthetic=300, utility=utility,
        collapsed_columns=list(collapsed))


def test_utility_floors_are_checked_when_the_fidelity_report_is_given():
    gate = evaluate_gate(_report(), fidelity=_fidelity())
    assert gate.passed
    assert [c.name for c in gate.checks][-3:] == [
        "collapsed_columns", "column_scores", "utility_auc_drop"]


@pytest.mark.parametrize(("changes", "failed", "said"), [
    ({"collapsed": ["s6"]}, "collapsed_columns", "s6"),
    ({"scores": (0.9, 0.3)}, "column_scores", "c1"),
    ({"real_auc": 0.861, "synthetic_auc": 0.5}, "utility_auc_drop", "synthetic-trained 0.500"),
    ({"synthetic_auc": None, "error": "the synthetic training rows hold a single class"},
     "utility_auc_drop", "single class"),
])
def test_a_table_that_misleads_fails_a_utility_floor(changes, failed, said):
    gate = evaluate_gate(_report(), fidelity=_fidelity(**changes))
    assert [c.name for c in gate.failed] == [failed]
    assert said in gate.failed[0].description and "Try:" in gate.failed[0].line()


def test_without_a_target_the_auc_floor_is_skipped_not_passed_silently():
    fidelity = dataclasses.replace(_fidelity(), utility=None)
    gate = evaluate_gate(_report(), fidelity=fidelity)
    assert gate.passed
    assert "skipped" in gate.checks[-1].description
