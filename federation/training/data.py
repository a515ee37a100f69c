"""From the node's common data model to arrays and tensors.

Kept free of heavy imports at module level (torch loads on first use): Flower
starts a new process for every message, and the governance checks that run
before any training should not pay for a deep-learning stack they do not use.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from tre.core.db import Database

if TYPE_CHECKING:
    import torch


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N×H×W(×C) → float N×C×H×W scaled to [-1, 1]."""
    import torch

    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[..., None]
    t = torch.from_numpy(np.array(arr, dtype=np.float32)).permute(0, 3, 1, 2)
    return t.div(127.5).sub_(1.0).contiguous()


def load_imaging(
    db: Database, dataset_id: str, split: str, pseudonyms: Iterable[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N×H×W×C uint8) and labels of one split, restricted to `pseudonyms` if given.

    One query joining imaging_study and image through the common model; the node
    data plane's own loader replaces this when it lands.
    """
    sql = (
        "SELECT s.label, i.height, i.width, i.channels, i.pixels FROM imaging_study s"
        " JOIN image i ON i.image_ref = s.image_ref"
        " WHERE s.dataset_id = ? AND s.split = ? AND s.label IS NOT NULL"
    )
    params: list = [dataset_id, split]
    if pseudonyms is not None:
        sql += " AND s.pseudonym IN (SELECT unnest(?::VARCHAR[]))"
        params.append(sorted(set(pseudonyms)))
    with db.reader() as cur:
        rows = cur.execute(sql + " ORDER BY s.study_id", params).fetchall()
    if not rows:
        return np.zeros((0, 1, 1, 1), np.uint8), np.zeros((0,), np.int64)
    h, w, c = rows[0][1], rows[0][2], rows[0][3]
    buf = np.frombuffer(b"".join(r[4] for r in rows), dtype=np.uint8)
    images = buf.reshape(len(rows), h, w, c)
    labels = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    return images, labels


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
