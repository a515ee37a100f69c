"""GaussianCopula: bare SDV fit+sample vs our whole pipeline, side by side.

    python bench/synthetic.py [--large-rows 100000] [--repeat 3] [--skip-large]

Two real-derived tables:

* breast-cancer: scikit-learn's Wisconsin table (569 patients, 30 features, the
  diagnosis) with a patient id column that the pipeline must exclude;
* resampled: the same 31 columns resampled to --large-rows rows with noise (each
  number jittered by 10 % of its column's standard deviation).

For each table, in the same process and after one warm-up run of both paths (so
imports and anonymeter's numba JIT are not charged to either side):

* bare SDV: `Metadata.detect_from_dataframes`, `GaussianCopulaSynthesizer.fit`
  on all rows, `sample` as many rows - what a user of SDV alone would run;
* pipeline: `synthetic.run_pipeline` - column plan, 70/30 hold-out, fit (on the
  70 %, so its fit is cheaper than the bare one), sample as many rows as the real
  table, fidelity report (diagnostic, quality, utility), privacy report (copies,
  DCR, membership attack, anonymeter) and the gate, with the default report caps.

Writes bench/results/synthetic.json (figures, ratios, machine, load average,
command, date) and prints the BENCHMARKS.md row. `pipeline_reports_s` is what the
pipeline adds to fit+sample (plan, both reports, gate). Times are medians over
--repeat runs (the large table runs once); only the ratios are meant to be compared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import write_result  # noqa: E402
from synthetic import run_pipeline  # noqa: E402

AIM_QUALITY = 0.90
AIM_RATIO = 3.0


def breast_cancer() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    df = data.frame.drop(columns="target")
    df["diagnosis"] = data.target.map({0: "malignant", 1: "benign"})
    df.insert(0, "patient_id", [f"BC-{i:05d}" for i in range(len(df))])
    return df


def resampled(base: pd.DataFrame, rows: int, seed: int = 0) -> pd.DataFrame:
    """`rows` rows drawn from `base` with every number jittered (31 columns, no id)."""
    rng = np.random.default_rng(seed)
    df = base.drop(columns="patient_id").iloc[rng.integers(0, len(base), rows)]
    df = df.reset_index(drop=True)
    for col in df.columns:
        if pd.api.types.is_float_dtype(df[col]):
            x = df[col].to_numpy()
            df[col] = np.abs(x + rng.normal(0, 0.1 * x.std(), rows))
    return df


def bare_sdv(df: pd.DataFrame, rows: int) -> dict[str, Any]:
    from sdv.metadata import Metadata
    from sdv.single_table import GaussianCopulaSynthesizer

    data = df.drop(columns=[c for c in ("patient_id",) if c in df.columns])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        metadata = Metadata.detect_from_dataframes({"table": data})
        synth = GaussianCopulaSynthesizer(metadata)
        synth.fit({"table": data})
        t1 = time.perf_counter()
        out = synth.sample(rows)["table"]
        t2 = time.perf_counter()
    return {"fit_s": t1 - t0, "sample_s": t2 - t1, "total_s": t2 - t0, "rows": len(out),
            "_synthetic": out, "_metadata": metadata, "_real": data}


def bare_quality(run: dict[str, Any], cap: int = 10_000) -> float:
    """Quality of the bare run (outside the timing), on the same caps as the pipeline."""
    from sdv.evaluation import evaluate_quality

    real, syn = run["_real"], run["_synthetic"]
    real = real if len(real) <= cap else real.sample(cap, random_state=0)
    syn = syn if len(syn) <= cap else syn.sample(cap, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(evaluate_quality(real, syn, run["_metadata"], verbose=False).get_score())


def pipeline(df: pd.DataFrame) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = run_pipeline(df, synthesizer="gaussian_copula", target="diagnosis", seed=0)
    total = time.perf_counter() - t0
    p, f = result.privacy, result.fidelity
    u = f.utility
    return {
        "total_s": total,
        "stages_s": result.timings,
        "quality": f.quality_score,
        "column_shapes": f.column_shapes,
        "column_pair_trends": f.column_pair_trends,
        "diagnostic": f.diagnostic_score,
        "utility_auc_synthetic": u.synthetic.auc if u and u.synthetic else None,
        "utility_auc_real": u.real.auc if u and u.real else None,
        "gate_passed": result.gate.passed,
        "failed_checks": [c.name for c in result.gate.failed],
        "excluded": [e.name for e in result.excluded_columns],
        "privacy": {
            "exact_copies": p.exact_copies,
            "exact_copy_rate": p.exact_copy_rate,
            "holdout_copy_rate": p.holdout_copy_rate,
            "dcr_synthetic_median": p.dcr_synthetic.median,
            "dcr_holdout_median": p.dcr_holdout.median,
            "dcr_median_ratio": p.dcr_median_ratio,
            "dcr_p5_ratio": p.dcr_p5_ratio,
            "mia_advantage": p.mia_advantage,
            "mia_auc": p.mia_auc,
            "singling_out_risk": p.singling_out.risk,
            "linkability_risk": p.linkability.risk,
            "inference_risk": p.inference.risk,
            "inference_detail": p.inference.detail,
        },
        "notes": p.notes + f.notes,
    }


def measure(name: str, df: pd.DataFrame, repeat: int) -> dict[str, Any]:
    print(f"{name}: {len(df)} rows x {len(df.columns)} columns, {repeat} run(s)", flush=True)
    bares, pipes = [], []
    for i in range(repeat):
        bares.append(bare_sdv(df, len(df)))
        pipes.append(pipeline(df))
        print(f"  run {i + 1}: bare {bares[-1]['total_s']:.2f} s, pipeline "
              f"{pipes[-1]['total_s']:.2f} s {pipes[-1]['stages_s']}", flush=True)
    bare_total = statistics.median(b["total_s"] for b in bares)
    reports = statistics.median(reports_seconds(p["stages_s"]) for p in pipes)
    pipe_total = statistics.median(p["total_s"] for p in pipes)
    last = pipes[-1]
    return {
        "rows": len(df),
        "columns": len(df.columns),
        "repeat": repeat,
        "bare_sdv": {
            "fit_s": statistics.median(b["fit_s"] for b in bares),
            "sample_s": statistics.median(b["sample_s"] for b in bares),
            "total_s": bare_total,
            "quality": bare_quality(bares[-1]),
        },
        "pipeline": {**last, "total_s": pipe_total,
                     "total_s_runs": [p["total_s"] for p in pipes]},
        "ratio_pipeline_to_bare": pipe_total / bare_total,
        "pipeline_reports_s": reports,
        "ratio_reports_to_bare": reports / bare_total,
    }


def reports_seconds(stages: dict[str, float]) -> float:
    """What the pipeline adds to fitting and sampling: plan, both reports, the gate."""
    return sum(v for k, v in stages.items() if k in {"prepare", "fidelity", "privacy", "gate"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large-rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="print, do not write the JSON")
    args = ap.parse_args()

    load_start = os.getloadavg()
    base = breast_cancer()
    # Warm-up of both paths: imports, SDV's lazy modules, anonymeter's numba JIT.
    bare_sdv(base.iloc[:200], 200)
    run_pipeline(base.iloc[:200], target="diagnosis", seed=0)

    tables = {"breast_cancer": measure("breast_cancer", base, args.repeat)}
    if not args.skip_large:
        tables["resampled"] = measure("resampled", resampled(base, args.large_rows), 1)

    small = tables["breast_cancer"]
    aims = {
        "quality_breast_cancer_min": AIM_QUALITY,
        "quality_breast_cancer_met": small["pipeline"]["quality"] >= AIM_QUALITY
        and small["pipeline"]["gate_passed"],
        "ratio_large_max": AIM_RATIO,
    }
    if "resampled" in tables:
        aims["ratio_large_met"] = tables["resampled"]["ratio_pipeline_to_bare"] <= AIM_RATIO
    row = summary_row(tables)
    figures = {"tables": tables, "aims": aims, "benchmarks_md_row": row,
               "load_average": {"start": load_start, "end": os.getloadavg()}}
    print(row)
    if not args.no_write:
        path = write_result("synthetic", figures)
        print(f"wrote {path}")


def summary_row(tables: dict[str, Any]) -> str:
    """The BENCHMARKS.md row."""
    s = tables["breast_cancer"]
    sp = s["pipeline"]
    parts = [
        f"breast-cancer {s['rows']}×{s['columns']} (id excluded): bare "
        f"{s['bare_sdv']['total_s']:.1f} s vs pipeline {sp['total_s']:.1f} s "
        f"(×{s['ratio_pipeline_to_bare']:.1f}), quality {sp['quality']:.3f} "
        f"(bare {s['bare_sdv']['quality']:.3f}), gate "
        f"{'passed' if sp['gate_passed'] else 'FAILED'}, DCR ratio "
        f"{sp['privacy']['dcr_median_ratio']:.2f}, MIA adv {sp['privacy']['mia_advantage']:.3f}",
    ]
    if "resampled" in tables:
        r = tables["resampled"]
        rp = r["pipeline"]
        parts.append(
            f"{r['rows'] // 1000}k×{r['columns']}: bare {r['bare_sdv']['total_s']:.1f} s vs "
            f"pipeline {rp['total_s']:.1f} s (×{r['ratio_pipeline_to_bare']:.2f}; reports "
            f"{r['pipeline_reports_s']:.1f} s = ×{r['ratio_reports_to_bare']:.2f}), quality "
            f"{rp['quality']:.3f}, gate {'passed' if rp['gate_passed'] else 'FAILED'}")
    return ("| synthetic (GaussianCopula) | " + "; ".join(parts)
            + " | `python bench/synthetic.py` |")


if __name__ == "__main__":
    main()
