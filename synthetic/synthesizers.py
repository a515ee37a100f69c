"""Synthesizers behind one small protocol: SDV's single-table models, or your own.

The pipeline only needs `fit(data, plan)` and `sample(num_rows)`, so a node can
plug in another generator, and the gate tests can plug in a "synthesizer" that
copies training rows to prove the gate stops it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from synthetic.metadata import TABLE_NAME, TablePlan
from synthetic.names import SYNTHESIZERS

#: Names accepted by `make_synthesizer` (and by `tre node synthesize --synthesizer`).
DEFAULT_SYNTHESIZER = "gaussian_copula"


@runtime_checkable
class Synthesizer(Protocol):
    """What the pipeline needs from a generator."""

    name: str

    def fit(self, data: pd.DataFrame, plan: TablePlan) -> None:
        """Learn from the training rows (only the modelled columns of `plan`)."""

    def sample(self, num_rows: int) -> pd.DataFrame:
        """Draw new rows; repeated calls continue the same random stream."""


#: A learned marginal this far (Kolmogorov-Smirnov statistic against the training
#: values) from its column has diverged, not merely misfitted: it is refitted as a KDE.
DIVERGED_MARGINAL_KS = 0.3
FALLBACK_MARGINAL = "gaussian_kde"


class SDVSynthesizer:
    """SDV 2.0 single-table synthesizer (GaussianCopula, CTGAN or TVAE) with a fixed seed.

    GaussianCopula is the default: it fits in seconds on CPU, reaches a quality
    score of about 0.93 on the breast-cancer table, and since it learns marginals
    and a correlation matrix rather than rows it rarely reproduces a record. SDV
    fits each marginal as a beta distribution, and that fit can diverge on a
    narrow column (breast-cancer's mean fractal dimension, for about one row order
    in four), which collapses the column and the model's utility with it; such
    marginals are refitted as kernel density estimates (`_diverged_marginals`).
    Not every column is a KDE: those follow the training values more closely,
    which costs distance to the closest training row (the gate's DCR checks).
    CTGAN and TVAE capture non-linear structure but need many epochs (and a GPU)
    to beat it, and they memorise more as epochs grow.
    """

    def __init__(
        self,
        kind: str = DEFAULT_SYNTHESIZER,
        *,
        seed: int = 0,
        epochs: int | None = None,
        **params: Any,
    ) -> None:
        if kind not in SYNTHESIZERS:
            raise ValueError(
                f"unknown synthesizer {kind!r}: choose one of {', '.join(SYNTHESIZERS)}")
        self.name = kind
        self.seed = seed
        self.params = dict(params)
        if epochs is not None:
            if kind == "gaussian_copula":
                raise ValueError("epochs apply to ctgan and tvae only")
            self.params["epochs"] = epochs
        self.model: Any = None

    def _model_class(self) -> Any:
        from sdv.single_table import (
            CTGANSynthesizer,
            GaussianCopulaSynthesizer,
            TVAESynthesizer,
        )

        return {
            "gaussian_copula": GaussianCopulaSynthesizer,
            "ctgan": CTGANSynthesizer,
            "tvae": TVAESynthesizer,
        }[self.name]

    def fit(self, data: pd.DataFrame, plan: TablePlan) -> None:
        """Fit on `{"table": data}` (SDV 2.0 takes a dict), then seed its sampler."""
        if self.name != "gaussian_copula":
            _seed_global_rngs(self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = self._model_class()(plan.metadata, **self.params)
            self.model.fit({TABLE_NAME: data})
            diverged = self._diverged_marginals(data, plan.names("numerical"))
            if diverged:
                self.model = self._model_class()(
                    plan.metadata, **self.params,
                    numerical_distributions=dict.fromkeys(diverged, FALLBACK_MARGINAL))
                self.model.fit({TABLE_NAME: data})
                plan.notes.append("marginals refitted as kernel density estimates (the "
                                  "parametric fit diverged): " + ", ".join(diverged))
        # SDV samples from a fixed seed unless told otherwise; make `seed` count.
        if hasattr(self.model, "_set_random_state"):
            self.model._set_random_state(self.seed)

    def _diverged_marginals(self, data: pd.DataFrame, numerical: list[str]) -> list[str]:
        """The `numerical` columns whose learned GaussianCopula marginal (a scipy distribution)
        is at Kolmogorov-Smirnov distance DIVERGED_MARGINAL_KS or more from the training
        values; none for other models or when the caller chose the distributions."""
        if self.name != "gaussian_copula" or "numerical_distributions" in self.params:
            return []
        from scipy import stats

        diverged = []
        for column, spec in self.model.get_learned_distributions().items():
            dist = getattr(stats, spec["distribution"], None)
            if column not in numerical or dist is None:
                continue
            values = data[column].dropna()
            fitted = dist(**spec["learned_parameters"])
            if stats.kstest(values.to_numpy(float), fitted.cdf).statistic >= DIVERGED_MARGINAL_KS:
                diverged.append(column)
        return diverged

    def sample(self, num_rows: int) -> pd.DataFrame:
        """`num_rows` new rows (SDV 2.0 returns `{"table": df}`)."""
        if self.model is None:
            raise RuntimeError("fit the synthesizer before sampling")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.model.sample(num_rows)[TABLE_NAME]


SampleFunction = Callable[[pd.DataFrame, int, np.random.Generator], pd.DataFrame]


class FunctionSynthesizer:
    """Adapt `fn(train, num_rows, rng) -> DataFrame` to the protocol (custom generators)."""

    def __init__(self, fn: SampleFunction, *, name: str | None = None, seed: int = 0) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "custom")
        self.rng = np.random.default_rng(seed)
        self.train: pd.DataFrame | None = None

    def fit(self, data: pd.DataFrame, plan: TablePlan) -> None:
        self.train = data

    def sample(self, num_rows: int) -> pd.DataFrame:
        if self.train is None:
            raise RuntimeError("fit the synthesizer before sampling")
        return self.fn(self.train, num_rows, self.rng)


def make_synthesizer(
    spec: str | Synthesizer | SampleFunction = DEFAULT_SYNTHESIZER,
    *,
    seed: int = 0,
    epochs: int | None = None,
    **params: Any,
) -> Synthesizer:
    """A synthesizer from a name ('gaussian_copula', 'ctgan', 'tvae'), an object or a function."""
    if isinstance(spec, str):
        return SDVSynthesizer(spec, seed=seed, epochs=epochs, **params)
    if isinstance(spec, Synthesizer):
        return spec
    if callable(spec):
        return FunctionSynthesizer(spec, seed=seed)
    raise TypeError(f"not a synthesizer: {spec!r}")


def _seed_global_rngs(seed: int) -> None:
    # CTGAN/TVAE draw from torch's and numpy's global generators while fitting.
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a dependency of sdv's ctgan
        pass
