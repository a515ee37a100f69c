"""Read access to the common data model for the parts of the node that compute on it
(DP training, synthetic data, descriptors): images as arrays, clinical tables as frames.

These return row-level data and never leave the node; what may leave is decided by
the governance code that calls them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa

from federation.node.errors import DataError
from tre.core.db import Database


def load_images(
    db: Database,
    dataset_id: str,
    split: str | None,
    pseudonyms: Iterable[str] | None = None,
    *,
    labelled_only: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(X N×H×W×C, y int64, pseudonyms) of one split (None: all), ordered by study id.

    One query; the pixel blobs arrive as one Arrow buffer and are reshaped in one
    copy, not decoded per image. An empty result has shape (0, 0, 0, 0). `pseudonyms`
    restricts to those subjects (the consent filter's output). Unlabelled studies are
    left out unless `labelled_only` is False (their label is then -1). All images must
    share shape and dtype (MedMNIST does; mixed DICOM folders need resampling first):
    otherwise DataError names the shapes.
    """
    sql = [
        "SELECT s.pseudonym, coalesce(s.label, -1) AS label, i.height, i.width, i.channels,",
        " coalesce(i.frames, 1) AS frames, i.dtype, i.pixels",
        " FROM imaging_study s JOIN image i ON i.image_ref = s.image_ref",
        " WHERE s.dataset_id = ?",
    ]
    params: list = [dataset_id]
    if split is not None:
        sql.append(" AND s.split = ?")
        params.append(split)
    if labelled_only:
        sql.append(" AND s.label IS NOT NULL")
    if pseudonyms is not None:
        sql.append(" AND s.pseudonym IN (SELECT unnest(?::VARCHAR[]))")
        params.append(sorted(set(pseudonyms)))
    sql.append(" ORDER BY s.study_id")
    with db.reader() as cur:
        table = cur.sql("".join(sql), params=params).to_arrow_table()
    n = table.num_rows
    if n == 0:
        return np.zeros((0, 0, 0, 0), np.uint8), np.zeros(0, np.int64), []
    shapes = (
        table.select(["height", "width", "channels", "frames", "dtype"])
        .group_by(["height", "width", "channels", "frames", "dtype"])
        .aggregate([])
        .to_pylist()
    )
    if len(shapes) != 1:
        raise DataError(
            f"dataset {dataset_id} mixes image shapes {shapes[:5]}: resample before loading"
        )
    shape = shapes[0]
    if shape["frames"] != 1:
        raise DataError(f"dataset {dataset_id} holds {shape['frames']}-frame images")
    dtype = np.dtype(shape["dtype"]).newbyteorder("<")
    per_image = shape["height"] * shape["width"] * shape["channels"] * dtype.itemsize
    pixels = table.column("pixels").combine_chunks().cast(pa.large_binary())
    offsets = np.frombuffer(pixels.buffers()[1], dtype=np.int64)[pixels.offset :]
    start = int(offsets[0])
    data = np.frombuffer(pixels.buffers()[2], dtype=np.uint8)[start : start + n * per_image]
    if data.size != n * per_image:
        raise DataError(f"dataset {dataset_id}: pixel blobs do not match their recorded shape")
    images = data.view(dtype).reshape(n, shape["height"], shape["width"], shape["channels"])
    labels = table.column("label").to_numpy().astype(np.int64)
    # One copy: native byte order, writable, and independent of the Arrow buffers.
    return images.astype(dtype.newbyteorder("=")), labels, table.column("pseudonym").to_pylist()


def clinical_frame(db: Database, dataset_id: str) -> pd.DataFrame:
    """A clinical dataset as a wide frame: one row per pseudonym (sorted), one column per
    variable in the source's column order; numeric variables float64, text object."""
    with db.reader() as cur:
        variables = cur.execute(
            "SELECT variable, kind FROM clinical_variable WHERE dataset_id = ? ORDER BY position",
            [dataset_id],
        ).fetchall()
        if not variables:
            exists = cur.execute(
                "SELECT count(*) FROM dataset WHERE dataset_id = ?", [dataset_id]
            ).fetchall()[0][0]
            if not exists:
                raise DataError(f"no dataset {dataset_id}")
            return pd.DataFrame({"pseudonym": pd.Series([], dtype=object)})
        long = cur.execute(
            "SELECT pseudonym, variable, value_num, value_text FROM clinical"
            " WHERE dataset_id = ?", [dataset_id],
        ).df()
    wide_num = long.pivot(index="pseudonym", columns="variable", values="value_num")
    wide_text = long.pivot(index="pseudonym", columns="variable", values="value_text")
    out = pd.DataFrame(index=wide_num.index.sort_values())
    for name, kind in variables:
        source = wide_num if kind == "numeric" else wide_text
        column = source[name] if name in source.columns else pd.Series(dtype=object)
        out[name] = column.reindex(out.index).astype("float64" if kind == "numeric" else object)
    out.index.name = "pseudonym"
    return out.reset_index()


def dataset_overview(db: Database) -> list[dict]:
    """Exact local counts per dataset, for the operator (`tre node status`); never published."""
    with db.reader() as cur:
        return [
            dict(zip(("dataset_id", "kind", "title", "consent_regime", "subjects", "studies",
                      "clinical_values"), row, strict=True))
            for row in cur.execute(
                "SELECT d.dataset_id, d.kind, d.title, d.consent_regime,"
                " coalesce(st.subjects, cl.subjects, 0), coalesce(st.studies, 0),"
                " coalesce(cl.values_, 0)"
                " FROM dataset d"
                " LEFT JOIN (SELECT dataset_id, count(DISTINCT pseudonym) AS subjects,"
                "   count(*) AS studies FROM imaging_study GROUP BY dataset_id) st"
                "   USING (dataset_id)"
                " LEFT JOIN (SELECT dataset_id, count(DISTINCT pseudonym) AS subjects,"
                "   count(*) AS values_ FROM clinical GROUP BY dataset_id) cl USING (dataset_id)"
                " ORDER BY d.dataset_id"
            ).fetchall()
        ]
