"""The release gate: synthetic data leaves a node only if every check passes.

DESIGN §2 invariant 1 lets synthetic data leave a node only after it "passed the
privacy gate". Each check compares one figure of the `PrivacyReport` with a
threshold of `GateThresholds`; a check that could not be measured fails (unless
the operator opts out of anonymeter), because "unknown" is not "safe".

Defaults and why:

* ``max_exact_copy_rate = 0.0`` - no synthetic row may equal a training row more
  often than real held-out rows coincide with training rows by chance. With any
  continuous column that chance is 0, so the default means **no exact copies**;
  on a purely categorical table (where two real people often share every value)
  it allows only the coincidences real data already shows.
* ``min_dcr_median_ratio = 1.0`` - the median distance from a synthetic row to
  its closest training row must be at least the median distance from a held-out
  real row to its closest training row: synthetic rows are no closer to the
  people they were learned from than new people are.
* ``min_dcr_p5_ratio = 1.0`` - the same for the 5th percentile, so that a
  synthesizer cannot hide a few near-copies behind a healthy median.
* ``max_mia_advantage = 0.1`` - a distance-based membership-inference attacker
  may be at most 10 points better than a coin (advantage 2·(AUC − 0.5)); with
  the default caps its standard error is about 0.02-0.05, so a generator that
  leaks nothing passes and one that memorises (advantage near 1) does not.
* ``max_singling_out_risk = max_linkability_risk = max_inference_risk = 0.1`` -
  anonymeter's residual risks (success on training rows in excess of success on
  held-out control rows). 0.1 is in line with the anonymeter authors' reading of
  low risk and leaves room for its confidence interval at ~200 attacks.
* ``require_anonymeter = True`` - an anonymeter attack that failed to run fails
  its check; set it to False only where anonymeter cannot handle a table.

A release must also be worth releasing (utility floors, checked when the fidelity
report is given): a synthetic table that misleads does harm of its own.

* ``max_collapsed_columns = 0`` - no column that varies among the real rows may be
  constant in the synthetic ones (a collapsed column carries nothing and breaks
  every analysis that uses it).
* ``min_column_score = 0.5`` - every column's shape score (SDV's KS or TV
  complement, 1 = same distribution) at least 0.5: the synthesizer must get each
  marginal at least half right, not only the average of them.
* ``max_utility_auc_drop = 0.1`` - a model trained on synthetic rows, tested on real
  held-out rows, may lose at most 0.1 AUC against one trained on real rows. Without
  a categorical target this floor cannot be measured and is reported as skipped; a
  synthetic table whose target collapsed to one class fails it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from synthetic.fidelity import FidelityReport
from synthetic.privacy import AnonymeterRisk, PrivacyReport

ADVICE = {
    "exact_copies": (
        "the synthesizer reproduced training rows: try another synthesizer "
        "(gaussian_copula memorises least), fewer epochs for ctgan/tvae, or coarser "
        "variables (round measurements, dates to months, merge rare categories)"),
    "dcr": (
        "synthetic rows sit closer to training rows than new people do: try another "
        "synthesizer or fewer epochs, coarser variables, or fewer rows"),
    "mia": (
        "an attacker can tell who was in the training data: try fewer rows, coarser "
        "variables, or another synthesizer"),
    "singling_out": (
        "synthetic rows single out real individuals: coarsen quasi-identifiers "
        "(birth year to decade, dates to month, merge rare categories) or release fewer rows"),
    "linkability": (
        "records can be linked across column groups: coarsen or drop quasi-identifying "
        "columns, or release fewer rows"),
    "inference": (
        "a secret attribute can be inferred for training individuals: coarsen the "
        "attributes used to infer it, drop the sensitive column, or try another synthesizer"),
    "utility": (
        "the synthetic table misrepresents the real one: try another synthesizer "
        "(ctgan or tvae with more epochs), more rows, or fewer, coarser columns"),
}


@dataclass(frozen=True)
class GateThresholds:
    """Configurable limits of the release gate (defaults and reasons: module docstring)."""

    max_exact_copy_rate: float = 0.0
    min_dcr_median_ratio: float = 1.0
    min_dcr_p5_ratio: float = 1.0
    max_mia_advantage: float = 0.1
    max_singling_out_risk: float = 0.1
    max_linkability_risk: float = 0.1
    max_inference_risk: float = 0.1
    require_anonymeter: bool = True
    anonymeter_fail_insignificant: bool = False
    max_collapsed_columns: int = 0
    min_column_score: float = 0.5
    max_utility_auc_drop: float = 0.1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateCheck:
    """One check: the figure, the limit, pass/fail, and what to try when it fails."""

    name: str
    passed: bool
    value: float | None
    threshold: float
    comparison: str
    description: str
    advice: str = ""

    def line(self) -> str:
        status = "PASS" if self.passed else "FAIL"
        value = "n/a" if self.value is None else f"{self.value:.4g}"
        text = f"[{status}] {self.name}: {value} (must be {self.comparison} {self.threshold:g})"
        text += f" - {self.description}"
        if not self.passed and self.advice:
            text += f". Try: {self.advice}"
        return text

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GateResult:
    passed: bool
    checks: list[GateCheck]
    thresholds: GateThresholds = field(default_factory=GateThresholds)

    @property
    def failed(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        """Human-readable verdict, one line per check (for the CLI and the report)."""
        head = ("Release gate PASSED: the synthetic table may leave the node."
                if self.passed else
                "Release gate FAILED: nothing leaves the node. Failed: "
                + ", ".join(c.name for c in self.failed))
        return "\n".join([head, *(c.line() for c in self.checks)])

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "checks": [c.as_dict() for c in self.checks],
            "thresholds": self.thresholds.as_dict(),
            "summary": self.summary(),
        }


def _at_most(name: str, value: float | None, limit: float, description: str,
             advice_key: str) -> GateCheck:
    ok = value is not None and value <= limit
    return GateCheck(name, ok, value, limit, "<=", description, ADVICE[advice_key])


def _at_least(name: str, value: float | None, limit: float, description: str,
              advice_key: str) -> GateCheck:
    ok = value is not None and value >= limit
    return GateCheck(name, ok, value, limit, ">=", description, ADVICE[advice_key])


def _anonymeter_check(name: str, risk: AnonymeterRisk, limit: float, required: bool,
                      significant: bool, description: str) -> GateCheck:
    if risk.risk is None:
        msg = risk.error or "not measured"
        if required:
            return GateCheck(name, False, None, limit, "<=", f"{description}; {msg}",
                             "fix the table for anonymeter (or, if it cannot handle it, "
                             "set require_anonymeter=False and review by hand)")
        return GateCheck(name, True, None, limit, "<=", f"{description}; skipped: {msg}")
    check = _at_most(name, risk.risk, limit, description, name.removesuffix("_risk"))
    if not check.passed and not significant and risk.ci is not None and risk.ci[0] <= 0.0:
        return GateCheck(
            name, True, risk.risk, limit, "<=",
            f"{description}; above the limit but its 95% interval "
            f"[{risk.ci[0]:.3f}, {risk.ci[1]:.3f}] includes 0 (too few rows to tell it from "
            "no risk)")
    return check


UTILITY_CHECKS = ("collapsed_columns", "column_scores", "utility_auc_drop")


def _utility_checks(fidelity: FidelityReport, t: GateThresholds) -> list[GateCheck]:
    collapsed = fidelity.collapsed_columns
    scores = [(c["score"], c["column"]) for c in fidelity.column_scores
              if c.get("score") is not None]
    worst = min(scores) if scores else None
    checks = [
        _at_most("collapsed_columns", float(len(collapsed)), t.max_collapsed_columns,
                 "columns that vary in the real rows but not in the synthetic ones"
                 + (f": {', '.join(collapsed)}" if collapsed else ""), "utility"),
        _at_least("column_scores", worst[0] if worst else None, t.min_column_score,
                  "lowest column shape score (1 = same distribution)"
                  + (f", column {worst[1]}" if worst else ": none measured"), "utility"),
    ]
    utility = fidelity.utility
    if utility is None:
        checks.append(GateCheck("utility_auc_drop", True, None, t.max_utility_auc_drop, "<=",
                                "skipped: no categorical target to train a model on"))
        return checks
    real = utility.real.auc if utility.real else None
    synthetic = utility.synthetic.auc if utility.synthetic else None
    drop = None if real is None or synthetic is None else max(0.0, real - synthetic)
    described = (f"AUC on real held-out rows of a {utility.model} on {utility.target}: "
                 + (f"real-trained {real:.3f}, synthetic-trained {synthetic:.3f}"
                    if drop is not None else f"not measured ({utility.error or 'no AUC'})"))
    checks.append(_at_most("utility_auc_drop", drop, t.max_utility_auc_drop, described,
                           "utility"))
    return checks


def evaluate_gate(privacy: PrivacyReport, thresholds: GateThresholds | None = None,
                  fidelity: FidelityReport | None = None) -> GateResult:
    """Every check of the gate on one privacy report, and the utility floors when the
    fidelity report is given; passed only if all pass."""
    t = thresholds or GateThresholds()
    excess_copies = max(0.0, privacy.exact_copy_rate - privacy.holdout_copy_rate)
    checks = [
        _at_most(
            "exact_copies", excess_copies, t.max_exact_copy_rate,
            f"{privacy.exact_copies} of {privacy.n_synthetic} synthetic rows equal a training "
            f"row (rate {privacy.exact_copy_rate:.4f}; held-out rows by chance "
            f"{privacy.holdout_copy_rate:.4f}); figure = excess over chance",
            "exact_copies"),
        _at_least(
            "dcr_median_ratio", privacy.dcr_median_ratio, t.min_dcr_median_ratio,
            f"median distance to closest training row: synthetic "
            f"{privacy.dcr_synthetic.median:.4g} vs held-out real {privacy.dcr_holdout.median:.4g}",
            "dcr"),
        _at_least(
            "dcr_p5_ratio", privacy.dcr_p5_ratio, t.min_dcr_p5_ratio,
            f"5th percentile distance to closest training row: synthetic "
            f"{privacy.dcr_synthetic.p5:.4g} vs held-out real {privacy.dcr_holdout.p5:.4g}",
            "dcr"),
        _at_most(
            "mia_advantage", privacy.mia_advantage, t.max_mia_advantage,
            f"distance-based membership inference, AUC {privacy.mia_auc:.3f} on "
            f"{privacy.mia_members} training vs {privacy.mia_nonmembers} held-out rows",
            "mia"),
        _anonymeter_check("singling_out_risk", privacy.singling_out, t.max_singling_out_risk,
                          t.require_anonymeter, t.anonymeter_fail_insignificant,
                          "anonymeter singling-out residual risk"),
        _anonymeter_check("linkability_risk", privacy.linkability, t.max_linkability_risk,
                          t.require_anonymeter, t.anonymeter_fail_insignificant,
                          "anonymeter linkability residual risk"),
        _anonymeter_check("inference_risk", privacy.inference, t.max_inference_risk,
                          t.require_anonymeter, t.anonymeter_fail_insignificant,
                          "anonymeter attribute-inference residual risk"
                          + (f" ({privacy.inference.detail})" if privacy.inference.detail
                             else "")),
    ]
    if fidelity is not None:
        checks += _utility_checks(fidelity, t)
    return GateResult(passed=all(c.passed for c in checks), checks=checks, thresholds=t)
