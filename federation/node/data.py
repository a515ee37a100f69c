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

from federation.launch.columns import Column, TableSpec
from federation.node.errors import DataError
from federation.training.pixels import DEFAULT_IMAGE_SIZE, PixelMeta, prepare_image
from tre.core.db import Database

PIXEL_FIELDS = ("modality", "body_site", "photometric", "rescale_slope",
                "rescale_intercept", "window_center", "window_width")


def load_images(
    db: Database,
    dataset_id: str,
    split: str | None,
    pseudonyms: Iterable[str] | None = None,
    *,
    labelled_only: bool = True,
    size: int | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(X N×H×W×C, y int64, pseudonyms) of one split (None: all), ordered by study id.

    `pseudonyms` restricts to those subjects (the consent filter's output). Unlabelled
    studies are left out unless `labelled_only` is False (their label is then -1). An
    empty result has shape (0, 0, 0, 0).

    Plain 8-bit images (MedMNIST, PNG) that share one single-frame shape, `size` × `size`
    when `size` is given, come back as stored (uint8): one query, the pixel blobs reshaped
    in one copy. Anything else (DICOM with its rescale, window and photometric
    interpretation, 16-bit, multi-frame or mixed sizes) goes through the pixel pipeline
    (`federation.training.pixels.prepare_image`) and comes back float32 in [-1, 1] at
    `size` × `size` (default `DEFAULT_IMAGE_SIZE`, the runs' default image size).
    Images with different channel counts cannot be stacked: DataError names them.
    """
    sql = [
        "SELECT s.pseudonym, coalesce(s.label, -1) AS label, i.height, i.width, i.channels,",
        " coalesce(i.frames, 1) AS frames, i.dtype, i.pixels, s.modality, s.body_site,",
        " i.photometric, i.rescale_slope, i.rescale_intercept, i.window_center,",
        " i.window_width",
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
    labels = table.column("label").to_numpy().astype(np.int64)
    ps = table.column("pseudonym").to_pylist()
    channels = sorted(set(table.column("channels").to_pylist()))
    if len(channels) != 1:
        raise DataError(f"dataset {dataset_id} mixes images of {channels} channels: "
                        "they cannot be stacked into one tensor")
    shapes = (
        table.select(["height", "width", "channels", "frames", "dtype"])
        .group_by(["height", "width", "channels", "frames", "dtype"])
        .aggregate([])
        .to_pylist()
    )
    interpreted = table.select(["photometric", "rescale_slope", "rescale_intercept",
                                "window_center", "window_width"])
    shape = shapes[0]
    plain = (
        len(shapes) == 1 and shape["dtype"] == "uint8" and shape["frames"] == 1
        and (size is None or shape["height"] == shape["width"] == size)
        and all(interpreted.column(c).null_count == n for c in interpreted.column_names)
    )
    if plain:
        return _stored_images(table, dataset_id, shape), labels, ps
    return _pipeline_images(table, size or DEFAULT_IMAGE_SIZE), labels, ps


def _stored_images(table: pa.Table, dataset_id: str, shape: dict) -> np.ndarray:
    """Blobs of one shared shape as one N×H×W×C array (one copy, native byte order)."""
    n = table.num_rows
    dtype = np.dtype(shape["dtype"]).newbyteorder("<")
    per_image = shape["height"] * shape["width"] * shape["channels"] * dtype.itemsize
    pixels = table.column("pixels").combine_chunks().cast(pa.large_binary())
    offsets = np.frombuffer(pixels.buffers()[1], dtype=np.int64)[pixels.offset :]
    start = int(offsets[0])
    data = np.frombuffer(pixels.buffers()[2], dtype=np.uint8)[start : start + n * per_image]
    if data.size != n * per_image:
        raise DataError(f"dataset {dataset_id}: pixel blobs do not match their recorded shape")
    images = data.view(dtype).reshape(n, shape["height"], shape["width"], shape["channels"])
    # One copy: native byte order, writable, and independent of the Arrow buffers.
    return images.astype(dtype.newbyteorder("="))


def _pipeline_images(table: pa.Table, size: int) -> np.ndarray:
    """Every image through the pixel pipeline: float32 N × size × size × C in [-1, 1]."""
    rows = table.drop_columns(["pseudonym", "label"]).to_pylist()
    out = np.empty((len(rows), size, size, rows[0]["channels"]), np.float32)
    for k, r in enumerate(rows):
        dtype = np.dtype(r["dtype"]).newbyteorder("<")
        arr = np.frombuffer(r["pixels"], dtype=dtype).reshape(
            r["frames"], r["height"], r["width"], r["channels"])
        meta = PixelMeta(**{f: r[f] for f in PIXEL_FIELDS})
        out[k] = prepare_image(arr, meta, frames=r["frames"], size=size)
    return out


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


def clinical_variables(db: Database, dataset_id: str) -> dict[str, str]:
    """A clinical dataset's variables and their kinds ('numeric' or 'text')."""
    with db.reader() as cur:
        return dict(cur.execute(
            "SELECT variable, kind FROM clinical_variable WHERE dataset_id = ?"
            " ORDER BY position", [dataset_id]).fetchall())


def table_split_pseudonyms(db: Database, dataset_id: str, split: str, label: Column
                           ) -> list[str]:
    """Subjects of the clinical dataset with a label in `split` (what consent decides on).

    A table names no split: a subject's split is `default_split` of their pseudonym,
    the keyed hash image ingestion gives a study whose source names none, so it is per
    person, stable across ingestions, and the split of the person's images wherever
    their source named none.
    A text label outside the label's categories counts as no label.
    """
    # here, not at the top: the ingest package loads pydicom, which training never needs
    from federation.node.ingest.common import default_split

    with db.reader() as cur:
        rows = cur.execute(
            "SELECT pseudonym, value_num, value_text FROM clinical"
            " WHERE dataset_id = ? AND variable = ? ORDER BY 1",
            [dataset_id, label.name]).fetchall()
    return [p for p, num, text in rows
            if (text in label.categories if label.categories else num is not None)
            and default_split(p) == split]


def load_table(db: Database, dataset_id: str, split: str, pseudonyms: Iterable[str],
               table: TableSpec) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(X N×F float64, y int64, pseudonyms) of `pseudonyms`' labelled rows in `split`,
    sorted by pseudonym: numeric features as stored (NaN where missing), text ones
    one-hot over their categories; a threshold label is 1 above its threshold, else 0.
    Raises DataError for a label that is not a class index (a negative or fractional
    number)."""
    if table.label is None:
        raise DataError("the run names no label column")
    keep = set(pseudonyms) & set(table_split_pseudonyms(db, dataset_id, split, table.label))
    frame = clinical_frame(db, dataset_id)
    frame = frame[frame["pseudonym"].isin(keep)].reset_index(drop=True)
    blocks = []
    for col in table.features:
        values = frame[col.name] if col.name in frame else pd.Series([np.nan] * len(frame))
        if col.categories:
            blocks.append(np.stack([(values == c).to_numpy(float) for c in col.categories],
                                   axis=1))
        else:
            blocks.append(values.to_numpy(float)[:, None])
    x = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(frame), 0))
    label = frame[table.label.name]
    if table.label.categories:
        y = label.map({c: i for i, c in enumerate(table.label.categories)}).to_numpy(float)
    elif table.label.threshold is not None:
        y = table.label.outcome(label.to_numpy(float)).astype(float)
    else:
        y = label.to_numpy(float)
    if len(y) and (np.any(y < 0) or np.any(y != np.round(y))):
        raise DataError(f"label {table.label.name!r} of {dataset_id} holds values that are "
                        "not class indices 0, 1, …: name its classes (label=name=a|b) or "
                        "binarise it at a threshold (label=name>number)")
    return x, y.astype(np.int64), frame["pseudonym"].tolist()


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
