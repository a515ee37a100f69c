"""From the node's common data model to arrays and tensors.

Kept free of heavy imports at module level (torch loads on first use): Flower
starts a new process for every message, and the governance checks that run
before any training should not pay for a deep-learning stack they do not use.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from tre.core.db import Database

if TYPE_CHECKING:
    import torch


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """N×H×W(×C) → float32 N×C×H×W in [-1, 1].

    uint8 arrays (MedMNIST, 8-bit PNG stored as is) are scaled here; float arrays come
    from the pixel pipeline (`federation.training.pixels.prepare_image`), which already
    rescaled, windowed and normalised them to [-1, 1] in float32, and pass unchanged.
    """
    import torch

    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[..., None]
    t = torch.from_numpy(np.array(arr, dtype=np.float32)).permute(0, 3, 1, 2)
    if np.issubdtype(arr.dtype, np.floating):
        return t.contiguous()
    if arr.dtype != np.uint8:
        raise ValueError(f"images of dtype {arr.dtype} need the pixel pipeline first")
    return t.div(127.5).sub_(1.0).contiguous()


def inputs_to_tensor(x: np.ndarray) -> torch.Tensor:
    """A model's inputs: images (N×H×W×C) through `images_to_tensor`, table rows (N×F
    float32, already standardised: `standardise`) as they are."""
    import torch

    return images_to_tensor(x) if x.ndim > 2 else torch.from_numpy(np.asarray(x, np.float32))


def one_record_per_person(images: np.ndarray, labels: np.ndarray, pseudonyms: list[str],
                          *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One image (drawn with `seed`) of each person, in first-seen order.

    DP-SGD bounds what one *example* changes; the ledger plans and charges ε per
    person (the consented cohort). A person with several studies would otherwise
    weigh several examples and get a weaker guarantee than the one charged, so each
    round trains on one of their images, a different draw each round.
    """
    groups: dict[str, list[int]] = {}
    for i, person in enumerate(pseudonyms):
        groups.setdefault(person, []).append(i)
    rng = np.random.default_rng(seed)
    keep = np.array([rows[int(rng.integers(len(rows)))] for rows in groups.values()],
                    dtype=np.int64)
    return images[keep], labels[keep]


def split_pseudonyms(db: Database, dataset_id: str, split: str) -> list[str]:
    """Pseudonyms with a labelled study in the split: what the consent filter decides on."""
    with db.reader() as cur:
        return [
            r[0] for r in cur.execute(
                "SELECT DISTINCT pseudonym FROM imaging_study WHERE dataset_id = ? AND split = ?"
                " AND label IS NOT NULL ORDER BY 1",
                [dataset_id, split],
            ).fetchall()
        ]


def standardise(x: np.ndarray, numeric: np.ndarray) -> np.ndarray:
    """Float32 model inputs from a table's rows: `numeric` columns centred and scaled by
    the mean and standard deviation of the rows at hand, a missing value set to that
    mean (0); one-hot columns unchanged.

    The statistics are those of the node's own consented records of one split, computed
    where the rows are read and used only there: no mean or deviation leaves the node,
    and no node needs another's. What DP-SGD's ε covers is the training on these inputs,
    not the scaling itself: the released weights are fitted to inputs scaled by the
    node's statistics, so they are not covered by the accountant (statistics fixed by
    the run, e.g. published reference ranges, would close that).
    """
    out = np.array(x, dtype=np.float64)
    cols = out[:, numeric]
    if len(cols):
        with warnings.catch_warnings():  # an all-missing column: its mean is NaN, then 0
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(cols, axis=0), np.nanstd(cols, axis=0)
        mean, std = np.nan_to_num(mean), np.where(np.nan_to_num(std) > 0, std, 1.0)
        out[:, numeric] = np.nan_to_num((cols - mean) / std)
    return out.astype(np.float32)
