"""From the node's common data model to arrays and tensors.

Kept free of heavy imports at module level (torch loads on first use): Flower
starts a new process for every message, and the governance checks that run
before any training should not pay for a deep-learning stack they do not use.
"""

from __future__ import annotations

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
