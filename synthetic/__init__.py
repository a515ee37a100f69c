"""Synthetic versions of a node's tables, released only through a privacy gate.

Takes plain pandas DataFrames (whatever the node's common model returns), so it
depends on nothing above `tre.core` (DESIGN §4). Typical use at the node::

    from synthetic import run_pipeline, GateFailedError

    result = run_pipeline(df, synthesizer="gaussian_copula", target="label")
    print(result.summary())
    files = result.release_files()   # raises GateFailedError if the gate failed

See synthetic/README.md for the checks, the gate's defaults and why.

Names load on first use (PEP 562): SDV and SDMetrics take seconds to import, and a
command should be able to check its arguments and credentials before paying for them.
"""

import importlib
from typing import Any

_MODULES = {
    "synthetic.fidelity": ("FidelityReport", "UtilityReport", "fidelity_report",
                           "utility_check"),
    "synthetic.gate": ("GateCheck", "GateResult", "GateThresholds", "evaluate_gate"),
    "synthetic.limits": ("ReportLimits",),
    "synthetic.metadata": ("ColumnSpec", "ExcludedColumn", "TablePlan", "plan_table"),
    "synthetic.pipeline": ("GateFailedError", "SyntheticResult", "run_pipeline",
                           "split_holdout", "table_bytes"),
    "synthetic.plots": ("HistogramBins", "marginal_plots", "marginal_png", "pair_trends_png",
                        "safe_category_counts", "safe_histogram"),
    "synthetic.privacy": ("PrivacyReport", "privacy_report"),
    "synthetic.progress": ("ProgressCallback", "ProgressEvent", "rich_progress"),
    "synthetic.names": ("SYNTHESIZERS",),
    "synthetic.synthesizers": ("FunctionSynthesizer", "SDVSynthesizer", "Synthesizer",
                               "make_synthesizer"),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    try:
        module = _HOME[name]
    except KeyError:
        raise AttributeError(f"module 'synthetic' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
