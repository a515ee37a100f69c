"""One call from a real table to a gated synthetic table with its reports.

`run_pipeline` plans the columns (identifiers out), holds out real rows the
synthesizer never sees, fits on the rest, samples, writes the fidelity and
privacy reports, and runs the release gate. The released table comes from the
model fitted on the training rows only, because only for that model do the
held-out rows give an honest privacy baseline.

`SyntheticResult.release_files()` is the only way this package hands out files to
publish, and it refuses (`GateFailedError`) when the gate failed (DESIGN §2.1).
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from synthetic.fidelity import FidelityReport, UtilityModel, fidelity_report, guess_target
from synthetic.gate import UTILITY_CHECKS, GateResult, GateThresholds, evaluate_gate
from synthetic.limits import ReportLimits
from synthetic.metadata import ExcludedColumn, TablePlan, plan_table
from synthetic.privacy import PrivacyReport, privacy_report
from synthetic.progress import ProgressCallback, emit
from synthetic.synthesizers import SampleFunction, Synthesizer, make_synthesizer

MIN_TRAIN_ROWS = 20
MIN_HOLDOUT_ROWS = 10
#: Sampling is done in about this many chunks so progress can be shown, each of at
#: least SAMPLE_CHUNK_MIN rows (an SDV sample call costs ~0.2 s beyond its rows).
SAMPLE_CHUNKS = 10
SAMPLE_CHUNK_MIN = 10_000
#: A fit that fails only the utility floors (a collapsed column, a useless table) is
#: refitted with the next seed this many times. Never for a privacy check: trying
#: seeds until one passes would wear the privacy gate down.
UTILITY_REFITS = 1


class GateFailedError(RuntimeError):
    """Raised when something tries to take out a synthetic table that failed the gate."""

    def __init__(self, gate: GateResult) -> None:
        super().__init__(gate.summary())
        self.gate = gate


@dataclass
class SyntheticResult:
    """The synthetic table, both reports and the gate verdict of one run."""

    synthetic: pd.DataFrame
    plan: TablePlan
    fidelity: FidelityReport
    privacy: PrivacyReport
    gate: GateResult
    settings: dict[str, Any]
    timings: dict[str, float]
    train: pd.DataFrame = field(repr=False)
    holdout: pd.DataFrame = field(repr=False)
    modelled: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)

    @property
    def passed(self) -> bool:
        return self.gate.passed

    @property
    def excluded_columns(self) -> list[ExcludedColumn]:
        return list(self.plan.excluded)

    @property
    def exclusion_message(self) -> str:
        return self.plan.message

    def report(self) -> dict[str, Any]:
        """Everything about the run except the rows themselves (JSON-safe)."""
        return _json_safe({
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "settings": self.settings,
            "columns": self.plan.as_dict(),
            "gate": self.gate.as_dict(),
            "fidelity": self.fidelity.as_dict(),
            "privacy": self.privacy.as_dict(),
            "timings_s": self.timings,
        })

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.report(), indent=indent, ensure_ascii=False)

    def summary(self) -> str:
        """A few lines for the CLI: quality, utility, exclusions and the gate verdict."""
        f = self.fidelity
        lines = [
            f"{self.settings['synthesizer']}: {len(self.synthetic)} synthetic rows from "
            f"{len(self.train)} training rows ({len(self.holdout)} held out)",
            self.plan.message,
            f"quality {f.quality_score:.3f} (column shapes {f.column_shapes:.3f}, pair trends "
            f"{_fmt(f.column_pair_trends)}), diagnostic {f.diagnostic_score:.3f}",
        ]
        u = f.utility
        if u is not None and u.error:
            lines.append(f"utility ({u.target}): {u.error}")
        elif u is not None and u.real and u.synthetic:
            lines.append(
                f"utility ({u.target}, {u.model}): AUC synthetic-trained "
                f"{_fmt(u.synthetic.auc)} vs real-trained {_fmt(u.real.auc)}; accuracy "
                f"{u.synthetic.accuracy:.3f} vs {u.real.accuracy:.3f}")
        lines.append(self.gate.summary())
        return "\n".join(lines)

    def plots(self, *, min_count: int = 10) -> dict[str, bytes]:
        """PNG plots for the portal (no bin or category with fewer than `min_count` real rows)."""
        from synthetic.plots import marginal_plots, pair_trends_png

        out = {f"marginal_{k}.png": v for k, v in
               marginal_plots(self.train, self.modelled, self.plan, min_count=min_count).items()}
        pair = pair_trends_png(self.train, self.modelled, self.plan, min_count=min_count)
        if pair is not None:
            out["pair_trends.png"] = pair
        return out

    def release_files(
        self, *, formats: Sequence[str] = ("csv", "parquet"), plots: bool = True
    ) -> dict[str, bytes]:
        """Files to publish (table, report, plots) - only if the gate passed."""
        if not self.gate.passed:
            raise GateFailedError(self.gate)
        files: dict[str, bytes] = {"report.json": self.to_json().encode()}
        for fmt in formats:
            files[f"synthetic.{fmt}"] = table_bytes(self.synthetic, fmt)
        if plots:
            files.update({f"plots/{k}": v for k, v in self.plots().items()})
        return files


def table_bytes(df: pd.DataFrame, fmt: str) -> bytes:
    """The table as CSV or Parquet bytes (the portal's two download formats)."""
    if fmt == "csv":
        return df.to_csv(index=False).encode()
    if fmt == "parquet":
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return buf.getvalue()
    raise ValueError(f"unknown format {fmt!r}: use csv or parquet")


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float | np.floating):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def split_holdout(
    data: pd.DataFrame, *, fraction: float, seed: int, stratify: pd.Series | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and held-out rows (stratified on the target when every class can be)."""
    if not 0 < fraction < 1:
        raise ValueError("holdout_fraction must be between 0 and 1")
    n_hold = int(round(len(data) * fraction))
    if len(data) - n_hold < MIN_TRAIN_ROWS or n_hold < MIN_HOLDOUT_ROWS:
        raise ValueError(
            f"the table has {len(data)} rows: too few to keep {MIN_TRAIN_ROWS} training and "
            f"{MIN_HOLDOUT_ROWS} held-out rows (the privacy report needs both)")
    strat = None
    if stratify is not None:
        labels = stratify.astype(str).where(stratify.notna(), "(missing)")
        if labels.value_counts().min() >= 2:
            strat = labels
    train, holdout = train_test_split(data, test_size=n_hold, random_state=seed, stratify=strat)
    return train.sort_index(), holdout.sort_index()


def run_pipeline(
    df: pd.DataFrame,
    *,
    synthesizer: str | Synthesizer | SampleFunction = "gaussian_copula",
    rows: int | None = None,
    target: str | None = None,
    holdout_fraction: float = 0.3,
    seed: int = 0,
    thresholds: GateThresholds | None = None,
    limits: ReportLimits | None = None,
    exclude: Sequence[str] = (),
    keep: Sequence[str] = (),
    epochs: int | None = None,
    utility_model: UtilityModel = "logistic_regression",
    progress: ProgressCallback | None = None,
) -> SyntheticResult:
    """Plan, hold out, fit, sample, report and gate one table.

    `synthesizer` is 'gaussian_copula' (default), 'ctgan', 'tvae', a `Synthesizer`
    object or a function `fn(train, num_rows, rng) -> DataFrame`. `rows` defaults to
    the size of the real table. `target` (a categorical column) drives the utility
    check and the first anonymeter inference secret; when None, a categorical column
    named 'label', 'diagnosis', 'target', 'outcome' or 'class' is used if present.
    A fit that fails only the gate's utility floors is refitted with the next seed
    (UTILITY_REFITS; a synthesizer object is the caller's and is fitted once).
    """
    thresholds = thresholds or GateThresholds()
    limits = limits or ReportLimits()
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(now - clock, 3)
        clock = now

    emit(progress, "prepare", 0, 1, "checking columns")
    plan = plan_table(df, exclude=exclude, keep=keep)
    target_note = None
    if target is None:
        target = guess_target(plan)
        if target is not None:
            target_note = f"utility target chosen by name: {target}"
    elif target not in plan.columns:
        raise ValueError(f"target {target!r} is not a modelled column ({plan.message})")
    if target_note:
        plan.notes.append(target_note)
    train, holdout = split_holdout(
        plan.data, fraction=holdout_fraction, seed=seed,
        stratify=plan.data[target] if target is not None else None)
    n_rows = len(df) if rows is None else int(rows)
    if n_rows < 1:
        raise ValueError("rows must be at least 1")
    emit(progress, "prepare", 1, 1, plan.message)
    lap("prepare")

    refits = 0 if isinstance(synthesizer, Synthesizer) else UTILITY_REFITS  # objects: as given
    for refit in range(refits + 1):
        fit_seed = seed + refit
        synth = make_synthesizer(synthesizer, seed=fit_seed, epochs=epochs)
        emit(progress, "fit", 0, 1, f"fitting {synth.name} on {len(train)} rows")
        synth.fit(train, plan)
        emit(progress, "fit", 1, 1, f"fitted {synth.name}")
        lap("fit")

        modelled = _sample(synth, n_rows, plan, progress)
        lap("sample")

        emit(progress, "fidelity", 0, 1, "SDV diagnostic, quality and utility")
        fidelity = fidelity_report(train, holdout, modelled, plan, target=target,
                                   model=utility_model, seed=seed, limits=limits)
        emit(progress, "fidelity", 1, 1, f"quality {fidelity.quality_score:.3f}")
        lap("fidelity")

        emit(progress, "privacy", 0, 1, "copies, distances, membership and anonymeter attacks")
        privacy = privacy_report(train, holdout, modelled, plan, target=target, seed=seed,
                                 limits=limits)
        emit(progress, "privacy", 1, 1, "privacy report done")
        lap("privacy")

        gate = evaluate_gate(privacy, thresholds, fidelity)
        emit(progress, "gate", 1, 1, "gate passed" if gate.passed else
             "gate FAILED: " + ", ".join(c.name for c in gate.failed))
        lap("gate")
        utility_only = bool(gate.failed) and all(c.name in UTILITY_CHECKS for c in gate.failed)
        if not utility_only or refit == refits:
            break
        plan.notes.append(f"the fit with seed {fit_seed} failed the utility floors ("
                          + ", ".join(c.name for c in gate.failed)
                          + f"): refitted with seed {fit_seed + 1}")
    timings["total"] = round(sum(timings.values()), 3)

    settings = {
        "synthesizer": synth.name,
        "rows": n_rows,
        "target": target,
        "holdout_fraction": holdout_fraction,
        "seed": seed,
        "fit_seed": fit_seed,
        "epochs": epochs,
        "utility_model": utility_model,
        "real_rows": len(df),
        "train_rows": len(train),
        "holdout_rows": len(holdout),
        "limits": limits.as_dict(),
    }
    return SyntheticResult(
        synthetic=plan.restore(modelled), plan=plan, fidelity=fidelity, privacy=privacy,
        gate=gate, settings=settings, timings=timings, train=train, holdout=holdout,
        modelled=modelled)


def _sample(synth: Synthesizer, n_rows: int, plan: TablePlan,
            progress: ProgressCallback | None) -> pd.DataFrame:
    chunk = max(SAMPLE_CHUNK_MIN, math.ceil(n_rows / SAMPLE_CHUNKS))
    parts: list[pd.DataFrame] = []
    done = 0
    emit(progress, "sample", 0, n_rows, f"sampling {n_rows} rows")
    while done < n_rows:
        n = min(chunk, n_rows - done)
        part = synth.sample(n)
        if len(part) != n:
            raise RuntimeError(f"{synth.name} returned {len(part)} rows instead of {n}")
        parts.append(part)
        done += n
        emit(progress, "sample", done, n_rows, f"sampled {done} of {n_rows} rows")
    return plan.conform(pd.concat(parts, ignore_index=True))

