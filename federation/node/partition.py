"""Deterministic partitions of a public dataset across simulated hospitals.

Several nodes ingest the same public file (e.g. PneumoniaMNIST), each taking
`--partition i/n`. Every node computes the same assignment from the file's labels,
the scheme, the seed and alpha alone, so the n shares are disjoint and together
cover every image exactly once, with no coordination between nodes.

Schemes:
- ``iid``: a seeded shuffle of each split, cut into n near-equal parts.
- ``label-skew``: for each label, the share of each node is drawn once from
  Dirichlet(alpha) and applied to that label's images in every split, so a node's
  val/test sets resemble its train set. Smaller alpha, more skew.
- ``quantity-skew``: node sizes drawn once from Dirichlet(alpha) (labels iid),
  every node keeping at least one image of each split that has n or more.

Random streams come from `numpy.random.SeedSequence([seed, ...])` keyed by the split
and label, so one split's assignment never depends on another's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum

import numpy as np

SPLITS = ("train", "val", "test")
_SPLIT_CODE = {"train": 1, "val": 2, "test": 3}


class Scheme(StrEnum):
    IID = "iid"
    LABEL_SKEW = "label-skew"
    QUANTITY_SKEW = "quantity-skew"


class PartitionError(ValueError):
    """A partition spec that cannot be honoured; the message names it."""


def parse_partition(spec: str) -> tuple[int, int]:
    """`"2/3"` -> (2, 3); i counts from 1 and must not exceed n."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec or "")
    if not m:
        raise PartitionError(f"--partition {spec!r} is not of the form i/n (e.g. 1/3)")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= i <= n:
        raise PartitionError(f"--partition {spec}: i must be between 1 and n (n >= 1)")
    return i, n


def parse_scheme(value: str) -> Scheme:
    try:
        return Scheme(value)
    except ValueError:
        choices = ", ".join(s.value for s in Scheme)
        raise PartitionError(f"unknown split scheme {value!r}: choose one of {choices}") from None


def _split_counts(total: int, shares: np.ndarray, min_each: int = 0) -> np.ndarray:
    """Integer sizes summing to `total`, proportional to `shares` (largest remainder)."""
    raw = shares * total
    counts = np.floor(raw).astype(np.int64)
    rest = total - int(counts.sum())
    if rest:
        order = np.argsort(-(raw - counts), kind="stable")
        counts[order[:rest]] += 1
    if min_each and total >= min_each * len(counts):
        for j in np.flatnonzero(counts < min_each):
            while counts[j] < min_each:
                donor = int(np.argmax(counts))
                counts[donor] -= 1
                counts[j] += 1
    return counts


def _rng(*words: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(words)))


def _cut(indices: np.ndarray, counts: np.ndarray, out: np.ndarray) -> None:
    bounds = np.concatenate([[0], np.cumsum(counts)])
    for node in range(len(counts)):
        out[indices[bounds[node] : bounds[node + 1]]] = node


def assign_partitions(
    labels: Mapping[str, np.ndarray],
    n: int,
    scheme: Scheme | str = Scheme.IID,
    seed: int = 0,
    alpha: float = 0.5,
) -> dict[str, np.ndarray]:
    """For each split, an int array giving every item's node (0..n-1).

    `labels` maps split name to that split's label array (1-D or (N, 1)); only the
    labels and sizes matter, so every node derives the same answer from the file.
    """
    scheme = parse_scheme(scheme) if isinstance(scheme, str) else scheme
    if n < 1:
        raise PartitionError("n must be at least 1")
    if scheme is not Scheme.IID and not alpha > 0:
        raise PartitionError(f"alpha must be positive, got {alpha}")
    all_labels = np.unique(
        np.concatenate([np.asarray(v).reshape(-1) for v in labels.values()] or [np.zeros(0)])
    )
    # Shares drawn once per dataset (not per split) so every split of a node is alike.
    if scheme is Scheme.LABEL_SKEW:
        label_shares = {
            int(lab): _rng(seed, 7, int(lab)).dirichlet(np.full(n, alpha)) for lab in all_labels
        }
    elif scheme is Scheme.QUANTITY_SKEW:
        sizes = _rng(seed, 11).dirichlet(np.full(n, alpha))
    out: dict[str, np.ndarray] = {}
    for split, split_labels in labels.items():
        y = np.asarray(split_labels).reshape(-1)
        code = _SPLIT_CODE.get(split, 99)
        assignment = np.full(len(y), -1, dtype=np.int64)
        if scheme is Scheme.LABEL_SKEW:
            for lab in np.unique(y):
                idx = np.flatnonzero(y == lab)
                counts = _split_counts(len(idx), label_shares[int(lab)])
                _cut(_rng(seed, code, int(lab)).permutation(idx), counts, assignment)
        else:
            skewed = scheme is Scheme.QUANTITY_SKEW
            shares = sizes if skewed else np.full(n, 1.0 / n)
            counts = _split_counts(len(y), shares, min_each=1 if skewed else 0)
            _cut(_rng(seed, code).permutation(len(y)), counts, assignment)
        if (assignment < 0).any():  # pragma: no cover - guards the arithmetic above
            raise AssertionError("partition left items unassigned")
        out[split] = assignment
    return out


def partition_indices(
    labels: Mapping[str, np.ndarray],
    partition: tuple[int, int],
    scheme: Scheme | str = Scheme.IID,
    seed: int = 0,
    alpha: float = 0.5,
) -> dict[str, np.ndarray]:
    """Indices (sorted) of each split that belong to node i of n (i from 1)."""
    i, n = partition
    if not 1 <= i <= n:
        raise PartitionError(f"partition {i}/{n}: i must be between 1 and n")
    assignment = assign_partitions(labels, n, scheme, seed, alpha)
    return {split: np.flatnonzero(a == i - 1) for split, a in assignment.items()}
