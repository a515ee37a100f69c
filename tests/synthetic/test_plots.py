"""Plots leave the node: no bin or bar may be drawn from fewer than 10 real records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synthetic import (
    marginal_plots,
    marginal_png,
    pair_trends_png,
    plan_table,
    safe_category_counts,
    safe_histogram,
)

pytestmark = pytest.mark.unit

PNG = b"\x89PNG\r\n\x1a\n"


def _samples():
    rng = np.random.default_rng(0)
    yield "normal", rng.normal(0, 1, 500)
    yield "heavy tail", rng.standard_cauchy(300)
    yield "lognormal", rng.lognormal(3, 1.5, 1000)
    yield "few", rng.normal(0, 1, 12)
    yield "exactly ten", rng.normal(0, 1, 10)
    yield "outliers", np.r_[rng.normal(0, 1, 200), [1e6, -1e6, 5e5]]
    yield "constant", np.full(40, 3.0)
    yield "integers", rng.integers(1930, 2010, 150).astype(float)
    yield "two clusters", np.r_[rng.normal(0, 0.01, 50), rng.normal(100, 0.01, 7)]
    for seed in range(30):
        r = np.random.default_rng(seed)
        yield f"random {seed}", r.gamma(r.uniform(0.2, 5), r.uniform(0.1, 100),
                                       int(r.integers(10, 400)))


@pytest.mark.parametrize(("label", "values"), list(_samples()))
def test_every_histogram_bin_holds_at_least_ten_real_values(label, values):
    bins = safe_histogram(values, min_count=10)
    assert bins is not None, label
    assert np.all(np.diff(bins.edges) > 0)
    assert len(bins.edges) == len(bins.counts) + 1
    assert bins.counts.min() >= 10, (label, bins.counts)
    assert bins.counts.sum() == len(values)
    # the counts are those of the edges (nothing falls outside them)
    recount, _ = np.histogram(values, bins=bins.edges)
    assert list(recount) == list(bins.counts)


def test_too_few_values_give_no_histogram():
    assert safe_histogram(np.arange(9.0), min_count=10) is None
    assert safe_histogram(np.array([np.nan] * 50 + [1.0] * 5), min_count=10) is None


def test_outer_edges_do_not_reveal_extremes():
    values = np.r_[np.linspace(10, 20, 100), [23.456]]
    bins = safe_histogram(values, min_count=10)
    assert bins.edges[-1] != pytest.approx(23.456)
    assert bins.edges[0] <= 10 and bins.edges[-1] > 23.456


def test_rare_categories_are_pooled_or_suppressed():
    values = pd.Series(["a"] * 40 + ["b"] * 12 + ["c"] * 9 + ["d"] * 3 + ["e"] * 1)
    counts = safe_category_counts(values, min_count=10)
    assert dict(counts) == {"a": 40, "b": 12, "other": 13}
    values = pd.Series(["a"] * 40 + ["b"] * 12 + ["c"] * 4)
    counts = safe_category_counts(values, min_count=10)
    assert dict(counts) == {"a": 40, "b": 12}  # 'other' of 4 is suppressed too
    assert (counts >= 10).all()


def test_marginal_and_pair_plots_are_png(breast_cancer, imaging_metadata):
    plan = plan_table(breast_cancer)
    real = plan.data
    fake = real.sample(frac=1.0, random_state=1).reset_index(drop=True)
    png = marginal_png(real["mean radius"], fake["mean radius"], "numerical", name="r")
    assert png is not None and png.startswith(PNG)
    assert pair_trends_png(real, fake, plan).startswith(PNG)
    img = plan_table(imaging_metadata)
    plots = marginal_plots(img.data, img.data, img)
    assert {"study_date", "modality", "label"} <= set(plots)
    assert all(p.startswith(PNG) for p in plots.values())
    # a categorical column whose every category is rare has nothing safe to show
    tiny = pd.Series(list("abcdefgh"))
    assert marginal_png(tiny, tiny, "categorical") is None
