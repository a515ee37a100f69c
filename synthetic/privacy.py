"""Privacy report: does the synthetic table give away the people it was learned from?

Four independent views, each compared with real rows the synthesizer never saw
(the held-out rows), because "how close is close" only means something next to
what an unseen person looks like:

* **exact copies** - synthetic rows identical to a training row, next to the
  rate at which held-out rows coincide with a training row by chance;
* **distance to closest record (DCR)** - for each synthetic row the distance to
  the nearest training row, against the same for held-out rows. A synthesizer
  that memorises sits closer to its training rows than new people do;
* **membership inference** - an attacker who holds a real record and the
  synthetic table guesses "was in training" when the record has a close
  synthetic neighbour. Its advantage is 2·(AUC − 0.5) over training vs held-out
  rows (0: no better than a coin, 1: always right);
* **anonymeter** (singling out, linkability, attribute inference) - the
  residual risks of Giomi et al. 2022, i.e. attack success on training rows in
  excess of success on the held-out control rows.

Distances live in `RowEncoder`'s space. Large tables are subsampled (see
`ReportLimits`); exact copies are always counted over all rows.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import pairwise_distances_argmin_min, roc_auc_score, roc_curve

from synthetic.encoding import RowEncoder, as_labels, as_numbers
from synthetic.limits import ReportLimits
from synthetic.metadata import TablePlan


@dataclass
class DistanceSummary:
    """Distances to the closest training row of one set of query rows."""

    rows: int
    median: float
    p5: float
    mean: float

    @classmethod
    def of(cls, d: np.ndarray) -> DistanceSummary:
        return cls(len(d), float(np.median(d)), float(np.percentile(d, 5)), float(np.mean(d)))


@dataclass
class AnonymeterRisk:
    """One anonymeter risk (residual over the control rows) or why it could not be measured."""

    risk: float | None
    ci: tuple[float, float] | None = None
    attack_rate: float | None = None
    control_rate: float | None = None
    baseline_rate: float | None = None
    n_attacks: int | None = None
    detail: str = ""
    error: str | None = None


@dataclass
class PrivacyReport:
    """Figures the release gate checks; see the module docstring for what each means."""

    n_train: int
    n_holdout: int
    n_synthetic: int
    exact_copies: int
    exact_copy_rate: float
    holdout_copy_rate: float
    dcr_synthetic: DistanceSummary
    dcr_holdout: DistanceSummary
    mia_auc: float
    mia_advantage: float
    mia_best_tpr_minus_fpr: float
    mia_members: int
    mia_nonmembers: int
    singling_out: AnonymeterRisk
    linkability: AnonymeterRisk
    inference: AnonymeterRisk
    inference_by_secret: dict[str, AnonymeterRisk] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def dcr_median_ratio(self) -> float:
        """Median synthetic DCR over median held-out DCR (>= 1: no closer than new people)."""
        return _ratio(self.dcr_synthetic.median, self.dcr_holdout.median)

    @property
    def dcr_p5_ratio(self) -> float:
        """5th-percentile synthetic DCR over the held-out one (catches a few near-copies)."""
        return _ratio(self.dcr_synthetic.p5, self.dcr_holdout.p5)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dcr_median_ratio"] = self.dcr_median_ratio
        d["dcr_p5_ratio"] = self.dcr_p5_ratio
        return d


def _ratio(a: float, b: float) -> float:
    if b > 0:
        return a / b
    return 1.0 if a == 0 else float("inf")


def _subsample(df: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    if len(df) <= n:
        return df
    return df.iloc[np.sort(rng.choice(len(df), size=n, replace=False))]


def _row_keys(x: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in np.round(x, 9) + 0.0]


def nearest_distances(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Euclidean distance from each query row to its nearest reference row."""
    if len(queries) == 0 or len(reference) == 0:
        return np.zeros(len(queries))
    _, dist = pairwise_distances_argmin_min(queries, reference, metric="euclidean")
    return dist


def privacy_report(
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    synthetic: pd.DataFrame,
    plan: TablePlan,
    *,
    target: str | None = None,
    seed: int = 0,
    limits: ReportLimits | None = None,
) -> PrivacyReport:
    """Measure what the synthetic rows reveal about the training rows (see module doc)."""
    limits = limits or ReportLimits()
    rng = np.random.default_rng(seed)
    cols = plan.names()
    train, holdout, synthetic = train[cols], holdout[cols], synthetic[cols]
    if len(holdout) == 0:
        raise ValueError("the privacy report needs held-out real rows as a baseline")
    notes: list[str] = []
    enc = RowEncoder.fit(train, plan)

    # Exact copies over every row: a hash set of the training rows.
    x_train = enc.transform(train)
    x_syn = enc.transform(synthetic)
    x_hold = enc.transform(holdout)
    train_keys = set(_row_keys(x_train))
    copies = sum(k in train_keys for k in _row_keys(x_syn))
    holdout_copies = sum(k in train_keys for k in _row_keys(x_hold))

    # Distance to closest record: synthetic vs held-out rows, both to training rows.
    ref_idx = _cap_index(len(x_train), limits.reference_rows, rng)
    syn_idx = _cap_index(len(x_syn), limits.distance_rows, rng)
    hold_idx = _cap_index(len(x_hold), limits.distance_rows, rng)
    reference = x_train[ref_idx]
    dcr_syn = nearest_distances(x_syn[syn_idx], reference)
    dcr_hold = nearest_distances(x_hold[hold_idx], reference)
    if len(ref_idx) < len(x_train) or len(syn_idx) < len(x_syn):
        notes.append(
            f"DCR on {len(syn_idx)} synthetic and {len(hold_idx)} held-out rows against "
            f"{len(ref_idx)} training rows (seeded subsamples)")

    # Membership inference: members (training) vs non-members (held-out) by their
    # distance to the closest synthetic row. AUC does not depend on the class
    # balance, so every training row (up to the cap) adds precision.
    mem_idx = _cap_index(len(x_train), limits.distance_rows, rng)
    non_idx = _cap_index(len(x_hold), limits.distance_rows, rng)
    syn_ref = x_syn[_cap_index(len(x_syn), limits.reference_rows, rng)]
    d_mem = nearest_distances(x_train[mem_idx], syn_ref)
    d_non = nearest_distances(x_hold[non_idx], syn_ref)
    labels = np.r_[np.ones(len(d_mem)), np.zeros(len(d_non))]
    scores = -np.r_[d_mem, d_non]
    auc = float(roc_auc_score(labels, scores))
    fpr, tpr, _ = roc_curve(labels, scores)
    notes.append(
        f"membership attack: {len(d_mem)} training vs {len(d_non)} held-out rows; "
        f"standard error of the advantage about {_advantage_se(len(d_mem), len(d_non)):.3f}")

    anon = anonymeter_risks(train, holdout, synthetic, plan, target=target, seed=seed,
                            limits=limits)
    notes.extend(anon.pop("notes"))
    return PrivacyReport(
        n_train=len(train),
        n_holdout=len(holdout),
        n_synthetic=len(synthetic),
        exact_copies=int(copies),
        exact_copy_rate=copies / max(len(synthetic), 1),
        holdout_copy_rate=holdout_copies / len(holdout),
        dcr_synthetic=DistanceSummary.of(dcr_syn),
        dcr_holdout=DistanceSummary.of(dcr_hold),
        mia_auc=auc,
        mia_advantage=2 * (auc - 0.5),
        mia_best_tpr_minus_fpr=float(np.max(tpr - fpr)),
        mia_members=len(d_mem),
        mia_nonmembers=len(d_non),
        singling_out=anon["singling_out"],
        linkability=anon["linkability"],
        inference=anon["inference"],
        inference_by_secret=anon["inference_by_secret"],
        notes=notes,
    )


def _cap_index(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    if n <= cap:
        return np.arange(n)
    return np.sort(rng.choice(n, size=cap, replace=False))


def _advantage_se(n1: int, n2: int) -> float:
    # Standard error of 2·(AUC − 0.5) under "no leak" (Mann-Whitney null variance).
    return 2 * float(np.sqrt((n1 + n2 + 1) / (12 * n1 * n2)))


def _attack_frame(df: pd.DataFrame, plan: TablePlan) -> pd.DataFrame:
    """Anonymeter's view: numbers stay numbers (dates as days), the rest are strings."""
    out = {}
    for name, spec in plan.columns.items():
        if spec.kind in ("numerical", "datetime"):
            out[name] = as_numbers(df[name], spec.kind)
        else:
            out[name] = as_labels(df[name])
    return pd.DataFrame(out).reset_index(drop=True)


def _risk(evaluator: Any, n_attacks: int, **kwargs: Any) -> AnonymeterRisk:
    res = evaluator.results(**kwargs)
    risk = res.risk()
    return AnonymeterRisk(
        risk=float(risk.value),
        ci=(float(risk.ci[0]), float(risk.ci[1])),
        attack_rate=float(res.attack_rate.value),
        control_rate=None if res.control_rate is None else float(res.control_rate.value),
        baseline_rate=float(res.baseline_rate.value),
        n_attacks=n_attacks,
    )


def _failed(what: str, exc: BaseException) -> AnonymeterRisk:
    return AnonymeterRisk(
        risk=None,
        error=f"anonymeter {what} attack could not run: {type(exc).__name__}: {exc}",
    )


def anonymeter_risks(
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    synthetic: pd.DataFrame,
    plan: TablePlan,
    *,
    target: str | None = None,
    seed: int = 0,
    limits: ReportLimits | None = None,
) -> dict[str, Any]:
    """Singling-out, linkability and inference risks (anonymeter 1.1), failures reported.

    Training and control (held-out) samples have the same size so anonymeter need not
    extrapolate between sizes; the attacks sample with numpy's global generator, so
    it is seeded here and restored afterwards.
    """
    limits = limits or ReportLimits()
    notes: list[str] = []
    rng = np.random.default_rng(seed + 1)
    n = min(len(holdout), limits.anonymeter_rows)
    ori = _attack_frame(_subsample(train, n, rng), plan)
    control = _attack_frame(_subsample(holdout, n, rng), plan)
    syn = _attack_frame(_subsample(synthetic, limits.anonymeter_rows, rng), plan)
    n_attacks = max(1, min(limits.anonymeter_attacks, n))
    cols = list(ori.columns)
    out: dict[str, Any] = {"inference_by_secret": {}}
    notes.append(f"anonymeter: {n} training, {n} control, {len(syn)} synthetic rows, "
                 f"{n_attacks} attacks each")

    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    logging.getLogger("anonymeter").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out["singling_out"] = _singling_out(ori, syn, control, n_attacks, seed)
            out["linkability"] = _linkability(ori, syn, control, n_attacks, cols, rng)
            secrets = _secrets(cols, target, limits.anonymeter_secrets, rng)
            for secret in secrets:
                out["inference_by_secret"][secret] = _inference(
                    ori, syn, control, n_attacks, cols, secret, plan)
        for w in caught:
            msg = str(w.message)
            if "anonymeter" in (w.filename or "") or "Attack is as good" in msg:
                notes.append(f"anonymeter warning: {msg}")
    finally:
        np.random.set_state(state)

    by_secret: dict[str, AnonymeterRisk] = out["inference_by_secret"]
    measured = {k: v for k, v in by_secret.items() if v.risk is not None}
    if measured:
        worst = max(measured, key=lambda k: measured[k].risk or 0.0)
        out["inference"] = AnonymeterRisk(**{**asdict(measured[worst]),
                                             "detail": f"worst secret: {worst}"})
        failed = [k for k, v in by_secret.items() if v.risk is None]
        if failed:
            notes.append("anonymeter inference failed for: " + ", ".join(failed))
    elif by_secret:
        errors = "; ".join(v.error or "" for v in by_secret.values())
        out["inference"] = AnonymeterRisk(risk=None, error=errors)
    else:
        out["inference"] = AnonymeterRisk(
            risk=None, error="anonymeter inference needs at least two modelled columns")
    out["notes"] = notes
    return out


def _singling_out(ori: pd.DataFrame, syn: pd.DataFrame, control: pd.DataFrame,
                  n_attacks: int, seed: int) -> AnonymeterRisk:
    from anonymeter.evaluators import SinglingOutEvaluator

    try:
        n_cols = min(3, len(ori.columns))
        ev = SinglingOutEvaluator(ori=ori, syn=syn, control=control, n_attacks=n_attacks,
                                  n_cols=n_cols, max_attempts=20 * n_attacks, seed=seed)
        ev.evaluate(mode="multivariate" if n_cols > 1 else "univariate")
        r = _risk(ev, n_attacks)
        r.detail = f"multivariate queries on {n_cols} columns"
        return r
    except Exception as exc:  # anonymeter raises on degenerate data; report, do not crash
        return _failed("singling-out", exc)


def _linkability(ori: pd.DataFrame, syn: pd.DataFrame, control: pd.DataFrame,
                 n_attacks: int, cols: list[str], rng: np.random.Generator) -> AnonymeterRisk:
    from anonymeter.evaluators import LinkabilityEvaluator

    if len(cols) < 2:
        return AnonymeterRisk(risk=None, error="linkability needs at least two columns")
    try:
        shuffled = list(rng.permutation(cols))
        half = len(shuffled) // 2
        aux = (shuffled[:half], shuffled[half:])
        ev = LinkabilityEvaluator(ori=ori, syn=syn, control=control, n_attacks=n_attacks,
                                  aux_cols=aux, n_neighbors=1)
        ev.evaluate(n_jobs=1)
        r = _risk(ev, n_attacks, n_neighbors=1)
        r.detail = f"link {len(aux[0])} columns to the other {len(aux[1])} via 1 neighbour"
        return r
    except Exception as exc:
        return _failed("linkability", exc)


def _secrets(cols: list[str], target: str | None, k: int, rng: np.random.Generator) -> list[str]:
    if len(cols) < 2:
        return []
    first = [target] if target in cols else []
    rest = [c for c in rng.permutation(cols) if c not in first]
    return (first + rest)[: max(k, 1)]


def _inference(ori: pd.DataFrame, syn: pd.DataFrame, control: pd.DataFrame, n_attacks: int,
               cols: list[str], secret: str, plan: TablePlan) -> AnonymeterRisk:
    from anonymeter.evaluators import InferenceEvaluator

    try:
        aux = [c for c in cols if c != secret]
        what = "value"
        if plan.columns[secret].kind in ("numerical", "datetime"):
            # anonymeter's regression mode counts a guess within 5 % of the value as a
            # hit, which is meaningless for years or dates (5 % of 1980 is a century):
            # guess the decile of the training rows instead.
            edges = np.unique(np.nanquantile(ori[secret], np.linspace(0, 1, 11)[1:-1]))
            ori, syn, control = (
                f.assign(**{secret: _decile(f[secret], edges)}) for f in (ori, syn, control))
            what = "decile"
        ev = InferenceEvaluator(ori=ori, syn=syn, control=control, aux_cols=aux, secret=secret,
                                regression=False, n_attacks=n_attacks)
        ev.evaluate(n_jobs=1)
        r = _risk(ev, n_attacks)
        r.detail = f"{what} of {secret} from {len(aux)} other columns"
        return r
    except Exception as exc:
        return _failed(f"inference ({secret})", exc)


def _decile(x: pd.Series, edges: np.ndarray) -> pd.Series:
    bins = np.searchsorted(edges, x.to_numpy(dtype=float), side="right")
    return pd.Series([f"d{b}" for b in bins], index=x.index).where(x.notna())
