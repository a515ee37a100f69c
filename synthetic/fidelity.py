"""Fidelity report: is the synthetic table worth exploring?

SDV's diagnostic (is the data valid and shaped like the real table) and quality
report (column shapes, column-pair trends, overall score) compare the synthetic
rows with the training rows they were learned from. The utility check asks the
researcher's question directly: a classifier trained on synthetic rows and tested
on real held-out rows, next to the same classifier trained on real training rows.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from synthetic.encoding import as_labels, as_numbers
from synthetic.limits import ReportLimits
from synthetic.metadata import TablePlan

UtilityModel = Literal["logistic_regression", "gradient_boosting"]
TARGET_NAMES = ("label", "diagnosis", "target", "outcome", "class", "y")


@dataclass
class ModelScore:
    auc: float | None
    accuracy: float


@dataclass
class UtilityReport:
    """Train-on-synthetic/test-on-real next to train-on-real/test-on-real."""

    target: str
    model: str
    n_test: int
    n_train_real: int
    n_train_synthetic: int
    real: ModelScore | None = None
    synthetic: ModelScore | None = None
    error: str | None = None

    @property
    def auc_ratio(self) -> float | None:
        """Synthetic-trained AUC over real-trained AUC (1.0: as useful as the real rows)."""
        if self.real and self.synthetic and self.real.auc and self.synthetic.auc is not None:
            return self.synthetic.auc / self.real.auc
        return None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "auc_ratio": self.auc_ratio}


@dataclass
class FidelityReport:
    quality_score: float
    column_shapes: float
    column_pair_trends: float | None
    diagnostic_score: float
    diagnostic: dict[str, float | None]
    column_scores: list[dict[str, Any]]
    worst_pairs: list[dict[str, Any]]
    rows_real: int
    rows_synthetic: int
    utility: UtilityReport | None = None
    notes: list[str] = field(default_factory=list)
    collapsed_columns: list[str] = field(default_factory=list)
    """Columns that vary among the real training rows but not among the synthetic ones."""

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["utility"] = self.utility.as_dict() if self.utility else None
        return d


def guess_target(plan: TablePlan) -> str | None:
    """A categorical column named like an outcome ('label', 'diagnosis', ...), if any."""
    for name in TARGET_NAMES:
        for col, spec in plan.columns.items():
            if col.lower() == name and spec.kind in ("categorical", "boolean"):
                return col
    return None


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(v) else v


def _cap(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return df if len(df) <= n else df.sample(n=n, random_state=seed)


def fidelity_report(
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    synthetic: pd.DataFrame,
    plan: TablePlan,
    *,
    target: str | None = None,
    model: UtilityModel = "logistic_regression",
    seed: int = 0,
    limits: ReportLimits | None = None,
) -> FidelityReport:
    """SDV diagnostic + quality on the modelled columns, and the utility check if `target`."""
    from sdv.evaluation import evaluate_quality, run_diagnostic

    limits = limits or ReportLimits()
    cols = plan.names()
    real = _cap(train[cols], limits.quality_rows, seed)
    syn = _cap(synthetic[cols], limits.quality_rows, seed)
    notes = []
    if len(real) < len(train) or len(syn) < len(synthetic):
        notes.append(f"quality and diagnostic on {len(real)} real and {len(syn)} synthetic "
                     "rows (seeded subsamples)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diag = run_diagnostic(real, syn, plan.metadata, verbose=False)
        quality = evaluate_quality(real, syn, plan.metadata, verbose=False)
    props = quality.get_properties().set_index("Property")["Score"]
    dprops = diag.get_properties().set_index("Property")["Score"]
    shapes = quality.get_details("Column Shapes")
    column_scores = [
        {"column": r["Column"], "metric": r["Metric"], "score": _num(r["Score"])}
        for _, r in shapes.iterrows()
    ]
    worst: list[dict[str, Any]] = []
    if len(cols) > 1:
        pairs = quality.get_details("Column Pair Trends").dropna(subset=["Score"])
        for _, r in pairs.nsmallest(10, "Score").iterrows():
            worst.append({"columns": [r["Column 1"], r["Column 2"]], "metric": r["Metric"],
                          "score": _num(r["Score"])})
    report = FidelityReport(
        quality_score=float(quality.get_score()),
        column_shapes=float(props["Column Shapes"]),
        column_pair_trends=_num(props.get("Column Pair Trends")),
        diagnostic_score=float(diag.get_score()),
        diagnostic={str(k): _num(v) for k, v in dprops.items()},
        column_scores=column_scores,
        worst_pairs=worst,
        rows_real=len(real),
        rows_synthetic=len(syn),
        notes=notes,
        collapsed_columns=[c for c in cols if train[c].nunique(dropna=True) > 1
                           and synthetic[c].nunique(dropna=True) <= 1],
    )
    if target is not None:
        report.utility = utility_check(train, holdout, synthetic, plan, target, model=model,
                                       seed=seed, limits=limits)
    return report


def _features(plan: TablePlan, target: str) -> tuple[list[str], list[str]]:
    numeric = [c for c in plan.names("numerical", "datetime") if c != target]
    categorical = [c for c in plan.names("categorical", "boolean") if c != target]
    return numeric, categorical


def _frame(df: pd.DataFrame, plan: TablePlan, numeric: list[str],
           categorical: list[str]) -> pd.DataFrame:
    out = {c: as_numbers(df[c], plan.columns[c].kind) for c in numeric}
    out.update({c: as_labels(df[c]).fillna("(missing)") for c in categorical})
    return pd.DataFrame(out, index=df.index)


def _classifier(model: UtilityModel, numeric: list[str], categorical: list[str],
                seed: int) -> Pipeline:
    pre = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
    ])
    if model == "gradient_boosting":
        clf: Any = HistGradientBoostingClassifier(random_state=seed)
    elif model == "logistic_regression":
        clf = LogisticRegression(max_iter=2000)
    else:
        raise ValueError(f"unknown utility model {model!r}")
    return make_pipeline(pre, clf)


def _score(clf: Pipeline, x: pd.DataFrame, y: pd.Series) -> ModelScore:
    classes = list(clf.classes_)
    proba = clf.predict_proba(x)
    acc = float(accuracy_score(y, clf.predict(x)))
    auc: float | None = None
    try:
        if len(classes) == 2:
            auc = float(roc_auc_score((y == classes[1]).astype(int), proba[:, 1]))
        elif set(y.unique()) <= set(classes):
            auc = float(roc_auc_score(y, proba, multi_class="ovr", labels=classes))
    except ValueError:
        auc = None
    return ModelScore(auc=auc, accuracy=acc)


def utility_check(
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    synthetic: pd.DataFrame,
    plan: TablePlan,
    target: str,
    *,
    model: UtilityModel = "logistic_regression",
    seed: int = 0,
    limits: ReportLimits | None = None,
) -> UtilityReport:
    """AUC and accuracy on real held-out rows of models trained on synthetic vs real rows."""
    limits = limits or ReportLimits()
    if target not in plan.columns:
        raise ValueError(f"utility target {target!r} is not a modelled column")
    train = _cap(train, limits.utility_rows, seed)
    synthetic = _cap(synthetic, limits.utility_rows, seed)
    report = UtilityReport(target=target, model=model, n_test=len(holdout),
                           n_train_real=len(train), n_train_synthetic=len(synthetic))
    if plan.columns[target].kind not in ("categorical", "boolean"):
        report.error = (f"utility check needs a categorical target; {target!r} is "
                        f"{plan.columns[target].kind}")
        return report
    numeric, categorical = _features(plan, target)
    if not numeric and not categorical:
        report.error = "utility check needs at least one feature besides the target"
        return report
    y_test = as_labels(holdout[target])
    keep = y_test.notna()
    x_test = _frame(holdout[keep], plan, numeric, categorical)
    y_test = y_test[keep]
    for which, data in (("real", train), ("synthetic", synthetic)):
        y = as_labels(data[target])
        rows = y.notna()
        if y[rows].nunique() < 2:
            report.error = (f"the {which} training rows hold a single class of {target!r}; "
                            "no classifier can be trained")
            continue
        clf = _classifier(model, numeric, categorical, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(_frame(data[rows], plan, numeric, categorical), y[rows])
            setattr(report, which, _score(clf, x_test, y_test))
    return report
