"""Plots of synthetic vs real data for the portal, safe to show outside the node.

A plot of the real data is itself an output: a histogram bin holding 2 people
tells the world about those 2 people. So, as for feasibility counts (DESIGN §5,
k = 10), every histogram bin and every bar drawn from real rows holds at least
`min_count` real records: sparse bins are merged with a neighbour, rare
categories are pooled into "other", and the pool is dropped if it is still
sparse. Bin edges are rounded to "nice" numbers so the outer edges do not give
away the exact minimum or maximum. Synthetic data is binned on the real bins.

Pair trends are shown as rank-correlation heatmaps (real, synthetic, difference),
aggregates over all rows.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from synthetic.encoding import as_labels, as_numbers
from synthetic.metadata import TablePlan

MIN_COUNT = 10
OTHER = "other"
_REAL, _SYN = "#1f77b4", "#ff7f0e"


@dataclass(frozen=True)
class HistogramBins:
    """Bin edges (len k+1) and real counts (len k), every count >= the minimum."""

    edges: np.ndarray
    counts: np.ndarray


def _nice_width(span: float, bins: int) -> float:
    raw = span / max(bins, 1)
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    exp = math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * 10**exp >= raw:
            return m * 10**exp
    return 10 ** (exp + 1)


def safe_histogram(
    values: np.ndarray | pd.Series, *, min_count: int = MIN_COUNT, max_bins: int = 20
) -> HistogramBins | None:
    """Histogram bins of real values in which no bin holds fewer than `min_count` values.

    Starts from up to `max_bins` equal bins on nice edges, then repeatedly merges the
    sparsest bin into its smaller neighbour. None when there are fewer than
    `min_count` values in all (nothing may be shown).
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < min_count:
        return None
    lo, hi = float(x.min()), float(x.max())
    width = _nice_width(hi - lo, max_bins)
    start = math.floor(lo / width) * width
    n_bins = max(1, math.floor((hi - start) / width) + 1)
    edges = start + width * np.arange(n_bins + 1)
    counts, _ = np.histogram(x, bins=edges)
    edges, counts = list(edges), list(counts)
    while len(counts) > 1 and min(counts) < min_count:
        i = int(np.argmin(counts))
        if i == 0:
            j = 1
        elif i == len(counts) - 1:
            j = i - 1
        else:
            j = i - 1 if counts[i - 1] <= counts[i + 1] else i + 1
        a, b = min(i, j), max(i, j)
        counts[a] += counts[b]
        del counts[b]
        del edges[b]  # the edge between bins a and b
    return HistogramBins(np.asarray(edges, dtype=float), np.asarray(counts, dtype=int))


def safe_category_counts(values: pd.Series, *, min_count: int = MIN_COUNT) -> pd.Series:
    """Real counts per category, rare ones pooled as 'other' (dropped if still rare)."""
    labels = as_labels(values).fillna("(missing)")
    counts = labels.value_counts()
    keep = counts[counts >= min_count]
    pooled = int(counts[counts < min_count].sum())
    if pooled >= min_count:
        keep = pd.concat([keep, pd.Series({OTHER: pooled})])
    return keep.astype(int)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def marginal_png(
    real: pd.Series, synthetic: pd.Series, kind: str, *, name: str = "",
    min_count: int = MIN_COUNT,
) -> bytes | None:
    """Real vs synthetic shares of one column (histogram or bars); None if nothing is safe."""
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    if kind in ("numerical", "datetime"):
        r = as_numbers(real, kind).dropna().to_numpy()
        s = as_numbers(synthetic, kind).dropna().to_numpy()
        bins = safe_histogram(r, min_count=min_count)
        if bins is None:
            return None
        e = bins.edges
        s_counts, _ = np.histogram(np.clip(s, e[0], e[-1]), bins=e)
        widths = np.diff(e)
        ax.stairs(bins.counts / len(r) / widths, e, label=f"real (n={len(r)})", color=_REAL,
                  linewidth=2)
        ax.stairs(s_counts / max(len(s), 1) / widths, e, label=f"synthetic (n={len(s)})",
                  color=_SYN, linewidth=2, linestyle="--")
        ax.set_ylabel("density")
        if kind == "datetime":
            ticks = e if len(e) <= 8 else e[:: math.ceil(len(e) / 8)]
            ax.set_xticks(ticks)
            ax.set_xticklabels([str(pd.Timestamp(t * 86_400, unit="s").date()) for t in ticks],
                               rotation=30, ha="right", fontsize=8)
    else:
        counts = safe_category_counts(real, min_count=min_count)
        if counts.empty:
            return None
        s_labels = as_labels(synthetic).fillna("(missing)")
        s_labels = s_labels.where(s_labels.isin(counts.index), OTHER)
        s_counts = s_labels.value_counts().reindex(counts.index, fill_value=0)
        pos = np.arange(len(counts))
        ax.bar(pos - 0.2, counts / len(real), width=0.4, label=f"real (n={len(real)})",
               color=_REAL)
        ax.bar(pos + 0.2, s_counts / max(len(synthetic), 1), width=0.4,
               label=f"synthetic (n={len(synthetic)})", color=_SYN)
        ax.set_xticks(pos)
        ax.set_xticklabels([str(c)[:20] for c in counts.index], rotation=30, ha="right",
                           fontsize=8)
        ax.set_ylabel("share of rows")
    ax.set_title(f"{name}: real vs synthetic (bins of >= {min_count} real records)",
                 fontsize=9)
    ax.legend(fontsize=8)
    return _png(fig)


def marginal_plots(
    real: pd.DataFrame, synthetic: pd.DataFrame, plan: TablePlan, *, min_count: int = MIN_COUNT
) -> dict[str, bytes]:
    """One PNG per modelled column that has something safe to show, keyed by a safe name."""
    out: dict[str, bytes] = {}
    for name, spec in plan.columns.items():
        png = marginal_png(real[name], synthetic[name], spec.kind, name=name,
                           min_count=min_count)
        if png is not None:
            out[re.sub(r"[^A-Za-z0-9_.-]+", "_", name)] = png
    return out


def pair_trends_png(
    real: pd.DataFrame, synthetic: pd.DataFrame, plan: TablePlan, *,
    min_count: int = MIN_COUNT, max_columns: int = 40,
) -> bytes | None:
    """Spearman correlation heatmaps of real, synthetic and their difference."""
    cols = plan.names("numerical", "datetime")[:max_columns]
    if len(cols) < 2 or len(real) < min_count:
        return None

    def corr(df: pd.DataFrame) -> pd.DataFrame:
        num = pd.DataFrame({c: as_numbers(df[c], plan.columns[c].kind) for c in cols})
        return num.corr(method="spearman").fillna(0.0)

    cr, cs = corr(real), corr(synthetic)
    size = max(6.0, 0.25 * len(cols) + 3)
    fig = Figure(figsize=(3 * size, size))
    for i, (title, m, cmap, vmin) in enumerate([
        ("real", cr, "RdBu_r", -1.0), ("synthetic", cs, "RdBu_r", -1.0),
        ("|real - synthetic|", (cr - cs).abs(), "Reds", 0.0),
    ]):
        ax = fig.add_subplot(1, 3, i + 1)
        im = ax.imshow(m.to_numpy(), cmap=cmap, vmin=vmin, vmax=1.0)
        ax.set_title(f"{title} (Spearman)", fontsize=10)
        ax.set_xticks(range(len(cols)))
        ax.set_yticks(range(len(cols)))
        labels = [c[:18] for c in cols]
        ax.set_xticklabels(labels, rotation=90, fontsize=6)
        ax.set_yticklabels(labels if i == 0 else [], fontsize=6)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _png(fig)
