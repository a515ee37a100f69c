"""One numeric space in which rows of mixed types can be compared by distance.

Numeric and date columns are min-max scaled on the training rows (a full-range
difference counts 1), categories are one-hot encoded and scaled by 1/sqrt(2) so
that a different category also counts 1 in Euclidean distance. Missing values
get an indicator column. Fitted on the real training rows only, so the space does
not depend on what the synthesizer produced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from synthetic.metadata import TablePlan

_ONE_HOT_SCALE = 1 / np.sqrt(2)
_NS_PER_DAY = 86_400 * 10**9


def as_numbers(col: pd.Series, kind: str) -> pd.Series:
    """Numeric view of a numeric or datetime column (dates as days since 1970)."""
    if kind == "datetime":
        d = pd.to_datetime(col, errors="coerce").astype("datetime64[ns]")
        days = d.astype("int64").astype(float) / _NS_PER_DAY
        return days.where(d.notna())
    return pd.to_numeric(col, errors="coerce").astype(float)


def as_labels(col: pd.Series) -> pd.Series:
    """Categories as strings (so 1, 1.0 and '1' are the same category), missing as NaN."""
    return col.astype(object).where(col.notna()).map(lambda v: v if pd.isna(v) else str(v))


@dataclass
class RowEncoder:
    """Fit on real training rows, then `transform` any frame with the same columns."""

    plan: TablePlan
    numeric: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @classmethod
    def fit(cls, train: pd.DataFrame, plan: TablePlan) -> RowEncoder:
        enc = cls(plan)
        for name, spec in plan.columns.items():
            col = train[name]
            if col.isna().any():
                enc.missing.append(name)
            if spec.kind in ("numerical", "datetime"):
                x = as_numbers(col, spec.kind)
                lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
                med = float(np.nanmedian(x))
                enc.numeric[name] = (lo, (hi - lo) or 1.0, med)
            else:
                enc.categories[name] = sorted(as_labels(col).dropna().unique().tolist())
        return enc

    @property
    def width(self) -> int:
        return len(self.numeric) + sum(len(c) for c in self.categories.values()) + len(
            self.missing)

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        parts: list[np.ndarray] = []
        for name, spec in self.plan.columns.items():
            col = df[name]
            if name in self.numeric:
                lo, span, med = self.numeric[name]
                x = as_numbers(col, spec.kind).to_numpy(dtype=float)
                x = np.where(np.isnan(x), med, x)
                parts.append(((x - lo) / span)[:, None])
            else:
                cats = self.categories[name]
                codes = pd.Categorical(as_labels(col), categories=cats).codes
                onehot = np.zeros((len(df), len(cats)))
                hit = codes >= 0
                onehot[np.nonzero(hit)[0], codes[hit]] = _ONE_HOT_SCALE
                parts.append(onehot)
            if name in self.missing:
                parts.append(col.isna().to_numpy(dtype=float)[:, None])
        out = np.hstack(parts) if parts else np.zeros((len(df), 0))
        return out + 0.0  # no negative zeros, so equal rows have equal bytes
