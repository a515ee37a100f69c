"""What every ingester shares: the report, progress hook, dataset rows, batched writes.

Rows are written through Arrow tables (one INSERT per table and chunk) rather than
row by row: DuckDB's per-statement overhead would otherwise dominate ingestion.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from federation.node.errors import IngestError
from federation.node.home import NodeHome
from federation.node.pseudonyms import OFFLINE_NOTE, NodePseudonymiser
from tre.core.audit import AuditAction

DATASET_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CONSENT_REGIMES = ("opt-in", "opt-out")
SPLITS = ("train", "val", "test")
#: Shares of the default split (train, val, test) and the key of its hash.
DEFAULT_SPLIT_SHARES = (0.70, 0.15, 0.15)
SPLIT_KEY = b"tre-default-split-v1"


@dataclass(frozen=True)
class Skipped:
    """One source item left out: `name` is a file name or 'row N', never a patient id."""

    name: str
    reason: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason, "detail": self.detail}


@dataclass
class IngestReport:
    """Outcome of one ingestion batch, printed as the CLI summary and kept in the audit."""

    dataset_id: str
    source_kind: str
    unit: str = "images"
    ingested: int = 0
    already_present: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    batch_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    dataset_created: bool = False
    #: "federation" (through the pseudonymisation service) or "node-local" (offline key)
    pseudonyms: str = "node-local"

    def skip(self, name: str, reason: str, detail: str = "") -> None:
        self.skipped.append(Skipped(name, reason, detail[:300]))

    def reasons(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.skipped))

    def summary_line(self) -> str:
        parts = [f"ingested {self.ingested} {self.unit} into {self.dataset_id}"]
        parts.append(f"{self.already_present} already present (skipped)")
        if self.skipped:
            why = ", ".join(f"{n} {r}" for r, n in sorted(self.reasons().items()))
            parts.append(f"{len(self.skipped)} skipped: {why}")
        else:
            parts.append("0 skipped")
        line = "; ".join(parts)
        return line if self.pseudonyms == "federation" else f"{line}. Note: {OFFLINE_NOTE}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset_id": self.dataset_id,
            "source_kind": self.source_kind,
            "batch_id": self.batch_id,
            "ingested": self.ingested,
            "already_present": self.already_present,
            "skipped": [s.as_dict() for s in self.skipped],
            "skipped_by_reason": self.reasons(),
            "dataset_created": self.dataset_created,
            "pseudonyms": self.pseudonyms,
        }


class Progress(Protocol):
    """What ingesters report progress to (the CLI passes a rich progress bar)."""

    def start(self, total: int | None, description: str) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class NullProgress:
    def start(self, total: int | None, description: str) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


def check_dataset_id(dataset_id: str) -> str:
    if not DATASET_ID_RE.match(dataset_id or ""):
        raise IngestError(
            f"dataset id {dataset_id!r} is invalid: use 1-64 letters, digits, '.', '_' or '-'"
        )
    return dataset_id


def check_consent_regime(regime: str | None) -> str | None:
    if regime is not None and regime not in CONSENT_REGIMES:
        raise IngestError(f"consent regime {regime!r} is not one of {', '.join(CONSENT_REGIMES)}")
    return regime


def ensure_dataset(
    cur: duckdb.DuckDBPyConnection,
    *,
    dataset_id: str,
    kind: str,
    title: str,
    source: str,
    consent_regime: str | None,
    label_names: dict[str, str] | None,
) -> bool:
    """Create the dataset row, or check a re-run agrees with it. True if created.

    The consent regime is governance, not ingestion: a run may not silently change it.
    Label names may only gain new labels, never rename one.
    """
    # fetchall, not fetchone: DuckDB 2 refuses register() while a result is unfinished.
    rows = cur.execute(
        "SELECT kind, consent_regime, label_names FROM dataset WHERE dataset_id = ?", [dataset_id]
    ).fetchall()
    row = rows[0] if rows else None
    if row is None:
        cur.execute(
            "INSERT INTO dataset (dataset_id, kind, title, source, consent_regime, label_names)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [dataset_id, kind, title, source, consent_regime or "opt-out",
             json.dumps(label_names or {}, sort_keys=True)],
        )
        return True
    old_kind, old_regime, old_names_json = row
    if old_kind != kind:
        raise IngestError(f"dataset {dataset_id} holds {old_kind} data, not {kind}")
    if consent_regime is not None and consent_regime != old_regime:
        raise IngestError(
            f"dataset {dataset_id} has consent regime {old_regime}; ingestion cannot change it"
        )
    if label_names:
        old_names = json.loads(old_names_json or "{}")
        for key, name in label_names.items():
            if key in old_names and old_names[key] != name:
                raise IngestError(
                    f"dataset {dataset_id} names label {key} {old_names[key]!r}, not {name!r}"
                )
        merged = {**old_names, **label_names}
        if merged != old_names:
            cur.execute(
                "UPDATE dataset SET label_names = ? WHERE dataset_id = ?",
                [json.dumps(merged, sort_keys=True), dataset_id],
            )
    return False


def finish_batch(
    home: NodeHome,
    cur: duckdb.DuckDBPyConnection,
    report: IngestReport,
    *,
    source: str,
    params: dict[str, Any],
) -> None:
    """Record the batch and its audit entry in the caller's transaction.

    The audit keeps counts per skip reason, not file names: names of local files can
    carry patient identifiers, and the audit log is exported to auditors.
    """
    cur.execute(
        "INSERT INTO ingestion (batch_id, dataset_id, source_kind, source, params, ingested,"
        " skipped) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [report.batch_id, report.dataset_id, report.source_kind, source,
         json.dumps(params, sort_keys=True, default=str), report.ingested,
         len(report.skipped) + report.already_present],
    )
    home.audit.append(
        cur,
        actor=home.actor,
        action=AuditAction(f"ingest.{report.source_kind}"),
        object_type="dataset",
        object_id=report.dataset_id,
        details={
            "batch_id": report.batch_id,
            "pseudonyms": report.pseudonyms,
            "operator": _operator(),
            "source": source,
            "params": params,
            "ingested": report.ingested,
            "already_present": report.already_present,
            "skipped_by_reason": report.reasons(),
            "dataset_created": report.dataset_created,
        },
    )


def _operator() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown"


# -- rows -----------------------------------------------------------------------------


def normalise_sex(value: Any) -> str | None:
    """DICOM-style sex codes M / F / O; anything else unknown."""
    if value is None:
        return None
    text = str(value).strip().upper()
    if text in {"M", "MALE"}:
        return "M"
    if text in {"F", "FEMALE"}:
        return "F"
    if text in {"O", "OTHER"}:
        return "O"
    return None


def array_record(arr: np.ndarray, *, frames: int = 1, channels: int = 1) -> dict[str, Any]:
    """Image row fields for a pixel array of shape ([frames,] H, W[, channels])."""
    a = np.asarray(arr)
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and not np.little_endian):
        a = a.astype(a.dtype.newbyteorder("<"))
    a = np.ascontiguousarray(a)
    if frames > 1:
        height, width = a.shape[1], a.shape[2]
    else:
        height, width = a.shape[0], a.shape[1]
    return {
        "height": int(height),
        "width": int(width),
        "channels": int(channels),
        "frames": int(frames),
        "dtype": a.dtype.name,
        "pixels": a.tobytes(),
    }


def default_split(pseudonym: str) -> str:
    """The split of a person whose source names none: train / val / test in the shares
    `DEFAULT_SPLIT_SHARES`, from a keyed hash of the pseudonym.

    Per person, so no one's images sit on both sides of an evaluation; stable, so
    re-ingesting (or ingesting new images of the same person) lands in the same split.
    The key is fixed and public rather than the node's: pseudonyms are federation-wide,
    so every node puts one person in the same split, and a split reveals nothing the
    pseudonym does not (it is a function of it).
    """
    digest = hashlib.blake2b(pseudonym.encode(), key=SPLIT_KEY, digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    edge = 0.0
    for name, share in zip(SPLITS, DEFAULT_SPLIT_SHARES, strict=True):
        edge += share
        if u < edge:
            return name
    return SPLITS[-1]


class StudyRows:
    """Column buffers for person / image / imaging_study rows, flushed in chunks.

    Rows carry the local patient id (`person`) until the flush, which pseudonymises the
    whole chunk at once (one pseudonymisation-service call, not one per image) and gives
    rows without a split the person's `default_split`."""

    PERSON = ("pseudonym", "sex", "birth_year")
    IMAGE = ("image_ref", "height", "width", "channels", "dtype", "pixels", "frames")
    #: How to read the stored values (DICOM only; NULL for other sources).
    PIXEL_META = (("photometric", pa.string()), ("rescale_slope", pa.float64()),
                  ("rescale_intercept", pa.float64()), ("window_center", pa.float64()),
                  ("window_width", pa.float64()), ("transfer_syntax", pa.string()))
    STUDY = ("study_id", "pseudonym", "modality", "body_site", "study_date", "manufacturer",
             "label", "split", "image_ref")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, **row: Any) -> None:
        self.rows.append(row)

    def flush(self, cur: duckdb.DuckDBPyConnection, dataset_id: str,
              pseudonymiser: NodePseudonymiser) -> None:
        if not self.rows:
            return
        names = pseudonymiser.many([r["person"] for r in self.rows])
        pseudonyms = pa.array(names, pa.string())
        splits = [r.get("split") or default_split(p) for r, p in zip(self.rows, names,
                                                                      strict=True)]
        persons = pa.table({
            "pseudonym": pseudonyms,
            "sex": pa.array([r.get("sex") for r in self.rows], pa.string()),
            "birth_year": pa.array([r.get("birth_year") for r in self.rows], pa.int32()),
        })
        images = pa.table({
            "image_ref": pa.array([r["image_ref"] for r in self.rows], pa.string()),
            "height": pa.array([r["height"] for r in self.rows], pa.int32()),
            "width": pa.array([r["width"] for r in self.rows], pa.int32()),
            "channels": pa.array([r["channels"] for r in self.rows], pa.int32()),
            "dtype": pa.array([r["dtype"] for r in self.rows], pa.string()),
            "pixels": pa.array([r["pixels"] for r in self.rows], pa.large_binary()),
            "frames": pa.array([r.get("frames", 1) for r in self.rows], pa.int32()),
            **{name: pa.array([r.get(name) for r in self.rows], kind)
               for name, kind in self.PIXEL_META},
        })
        studies = pa.table({
            "study_id": pa.array([r["study_id"] for r in self.rows], pa.string()),
            "pseudonym": pseudonyms,
            "modality": pa.array([r.get("modality") for r in self.rows], pa.string()),
            "body_site": pa.array([r.get("body_site") for r in self.rows], pa.string()),
            "study_date": pa.array([r.get("study_date") for r in self.rows], pa.date32()),
            "manufacturer": pa.array([r.get("manufacturer") for r in self.rows], pa.string()),
            "label": pa.array([r.get("label") for r in self.rows], pa.int32()),
            "split": pa.array(splits, pa.string()),
            "image_ref": pa.array([r["image_ref"] for r in self.rows], pa.string()),
        })
        insert_studies(cur, dataset_id, persons=persons, images=images, studies=studies)
        self.clear()


def insert_studies(
    cur: duckdb.DuckDBPyConnection,
    dataset_id: str,
    *,
    persons: pa.Table,
    images: pa.Table,
    studies: pa.Table,
) -> None:
    """Insert new rows (callers have removed studies already stored).

    A person seen before keeps their recorded sex / birth year; unknown ones are
    filled in from the new rows. `images` may leave out the pixel-interpretation
    columns (`StudyRows.PIXEL_META`): they are then NULL.
    """
    image_columns = ", ".join(
        c for c in (*StudyRows.IMAGE, *(m for m, _ in StudyRows.PIXEL_META))
        if c in images.column_names)
    cur.register("_new_persons", persons)
    cur.register("_new_images", images)
    cur.register("_new_studies", studies)
    try:
        upsert_persons(cur, "_new_persons", persons)
        cur.execute(
            f"INSERT INTO image ({image_columns}) SELECT {image_columns} FROM _new_images"
        )
        cur.execute(
            "INSERT INTO imaging_study (study_id, dataset_id, pseudonym, modality, body_site,"
            " study_date, manufacturer, label, split, image_ref)"
            " SELECT study_id, ?, pseudonym, modality, body_site, study_date, manufacturer,"
            " label, split, image_ref FROM _new_studies",
            [dataset_id],
        )
    finally:
        release(cur, "_new_persons", "_new_images", "_new_studies")


def release(cur: duckdb.DuckDBPyConnection, *views: str) -> None:
    """Unregister Arrow views; after a failed statement the transaction is aborted and
    DuckDB refuses even that, and the original error is the one worth raising."""
    for name in views:
        with contextlib.suppress(duckdb.Error):
            cur.unregister(name)


def upsert_persons(cur: duckdb.DuckDBPyConnection, view: str, persons: pa.Table) -> None:
    """Insert unseen persons; fill a known person's unknown sex / birth year.

    An anti-join insert plus a targeted update, rather than ON CONFLICT DO UPDATE,
    which costs DuckDB about half as much again on a whole MedMNIST file.
    """
    cur.execute(
        "INSERT INTO person (pseudonym, sex, birth_year)"
        f" SELECT n.pseudonym, any_value(n.sex), any_value(n.birth_year) FROM {view} n"
        " ANTI JOIN person p ON p.pseudonym = n.pseudonym GROUP BY n.pseudonym"
    )
    if persons.column("sex").null_count == persons.num_rows and (
        persons.column("birth_year").null_count == persons.num_rows
    ):
        return
    cur.execute(
        "UPDATE person SET sex = coalesce(person.sex, n.sex),"
        " birth_year = coalesce(person.birth_year, n.birth_year)"
        " FROM (SELECT pseudonym, any_value(sex) AS sex, any_value(birth_year) AS birth_year"
        f" FROM {view} GROUP BY pseudonym) n"
        " WHERE person.pseudonym = n.pseudonym"
        " AND ((person.sex IS NULL AND n.sex IS NOT NULL)"
        " OR (person.birth_year IS NULL AND n.birth_year IS NOT NULL))"
    )


def existing_study_ids(cur: duckdb.DuckDBPyConnection, dataset_id: str) -> set[str]:
    return {
        r[0]
        for r in cur.execute(
            "SELECT study_id FROM imaging_study WHERE dataset_id = ?", [dataset_id]
        ).fetchall()
    }


# -- label files ----------------------------------------------------------------------


def read_labels_csv(path: Path, key_columns: tuple[str, ...]) -> tuple[pd.DataFrame, str]:
    """Read a labels CSV; returns the frame and which key column it uses."""
    if not path.is_file():
        raise IngestError(f"labels file {path} does not exist")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - pandas raises many kinds
        raise IngestError(f"labels file {path} is not a readable CSV: {exc}") from exc
    frame.columns = [c.strip().lower() for c in frame.columns]
    key = next((c for c in key_columns if c in frame.columns), None)
    if key is None or "label" not in frame.columns:
        raise IngestError(
            f"labels file {path} needs a 'label' column and one of: {', '.join(key_columns)}"
        )
    if "split" in frame.columns:
        bad = sorted({s for s in frame["split"].str.strip() if s and s not in SPLITS})
        if bad:
            raise IngestError(f"labels file {path}: unknown split(s) {bad}; use train/val/test")
    dupes = frame[key].str.strip().duplicated()
    if dupes.any():
        raise IngestError(
            f"labels file {path}: {key} {frame[key][dupes].iloc[0]!r} appears more than once"
        )
    return frame, key


def label_codes(values: pd.Series) -> tuple[list[int | None], dict[str, str]]:
    """Integer labels from a column: integers stay; text labels get codes 0..m-1 by name."""
    text = values.fillna("").astype(str).str.strip()
    present = text[text != ""]
    if present.str.fullmatch(r"-?\d+").all():
        return [int(v) if v else None for v in text], {}
    names = sorted(set(present))
    code = {name: i for i, name in enumerate(names)}
    return [code[v] if v else None for v in text], {str(i): n for n, i in code.items()}


def parse_date(value: Any) -> date | None:
    """A DICOM DA (YYYYMMDD) or ISO date; None when absent or malformed."""
    text = str(value or "").strip().replace("-", "")
    if len(text) < 8 or not text[:8].isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None
