"""Synthetic versions of a node's tables, released only through a privacy gate.

Takes plain pandas DataFrames (whatever the node's common model returns), so it
depends on nothing above `tre.core` (DESIGN §4). Typical use at the node::

    from synthetic import run_pipeline, GateFailedError

    result = run_pipeline(df, synthesizer="gaussian_copula", target="label")
    print(result.summary())
    files = result.release_files()   # raises GateFailedError if the gate failed

See synthetic/README.md for the checks, the gate's defaults and why.
"""

from synthetic.fidelity import FidelityReport, UtilityReport, fidelity_report, utility_check
from synthetic.gate import GateCheck, GateResult, GateThresholds, evaluate_gate
from synthetic.limits import ReportLimits
from synthetic.metadata import ColumnSpec, ExcludedColumn, TablePlan, plan_table
from synthetic.pipeline import (
    GateFailedError,
    SyntheticResult,
    run_pipeline,
    split_holdout,
    table_bytes,
)
from synthetic.plots import (
    HistogramBins,
    marginal_plots,
    marginal_png,
    pair_trends_png,
    safe_category_counts,
    safe_histogram,
)
from synthetic.privacy import PrivacyReport, privacy_report
from synthetic.progress import ProgressCallback, ProgressEvent, rich_progress
from synthetic.synthesizers import (
    SYNTHESIZERS,
    FunctionSynthesizer,
    SDVSynthesizer,
    Synthesizer,
    make_synthesizer,
)

__all__ = [
    "SYNTHESIZERS",
    "ColumnSpec",
    "ExcludedColumn",
    "FidelityReport",
    "FunctionSynthesizer",
    "GateCheck",
    "GateFailedError",
    "GateResult",
    "GateThresholds",
    "HistogramBins",
    "PrivacyReport",
    "ProgressCallback",
    "ProgressEvent",
    "ReportLimits",
    "SDVSynthesizer",
    "Synthesizer",
    "SyntheticResult",
    "TablePlan",
    "UtilityReport",
    "evaluate_gate",
    "fidelity_report",
    "make_synthesizer",
    "marginal_plots",
    "marginal_png",
    "pair_trends_png",
    "plan_table",
    "privacy_report",
    "rich_progress",
    "run_pipeline",
    "safe_category_counts",
    "safe_histogram",
    "split_holdout",
    "table_bytes",
    "utility_check",
]
