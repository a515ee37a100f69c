"""SQL for the synthetic releases nodes upload next to their catalogue entries.

The files themselves (Parquet, CSV, plots) live on disk under the portal's state
directory; a row here names them with their SHA-256, the gate verdict and the
reports. Releases are never overwritten: the newest per dataset is the one served,
older ones stay as the record of what was offered when. A withdrawn release keeps its
row (who withdrew it, when, why); its data files are removed from disk.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from duckdb import DuckDBPyConnection as Cursor

from tre.core.db import Migration, rows_as_dicts

COMPONENT = "portal_synthetic"
MIGRATIONS: list[Migration] = [
    (
        1,
        """
        CREATE TABLE synthetic_release (
            id VARCHAR PRIMARY KEY,
            hospital_id VARCHAR NOT NULL,
            dataset_id VARCHAR NOT NULL,
            uploaded_by VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            rows INTEGER NOT NULL,
            columns VARCHAR NOT NULL,
            files VARCHAR NOT NULL,
            gate VARCHAR NOT NULL,
            report VARCHAR NOT NULL
        )
        """,
    ),
    (
        2,
        """
        ALTER TABLE synthetic_release ADD COLUMN withdrawn_at TIMESTAMPTZ;
        ALTER TABLE synthetic_release ADD COLUMN withdrawn_by VARCHAR;
        ALTER TABLE synthetic_release ADD COLUMN withdrawal_reason VARCHAR
        """,
    ),
]

_JSON = ("columns", "files", "gate", "report")


def insert_release(cur: Cursor, row: dict[str, Any]) -> None:
    cur.execute(
        "INSERT INTO synthetic_release (id, hospital_id, dataset_id, uploaded_by, created_at,"
        " rows, columns, files, gate, report) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [row["id"], row["hospital_id"], row["dataset_id"], row["uploaded_by"],
         row["created_at"], row["rows"], *(json.dumps(row[k]) for k in _JSON)],
    )


def _row(row: dict[str, Any]) -> dict[str, Any]:
    for key in _JSON:
        row[key] = json.loads(row[key])
    return row


def get_release(cur: Cursor, release_id: str) -> dict[str, Any] | None:
    cur.execute("SELECT * FROM synthetic_release WHERE id = ?", [release_id])
    rows = rows_as_dicts(cur)
    return _row(rows[0]) if rows else None


def set_withdrawn(cur: Cursor, release_id: str, *, at: datetime, by: str, reason: str) -> None:
    cur.execute("UPDATE synthetic_release SET withdrawn_at = ?, withdrawn_by = ?,"
                " withdrawal_reason = ? WHERE id = ?", [at, by, reason, release_id])


def withdrawn_with_table(cur: Cursor, hospital_id: str, dataset_id: str,
                         table_sha256: str) -> dict[str, Any] | None:
    """A withdrawn release of the dataset whose Parquet table had this digest, if any."""
    cur.execute("SELECT * FROM synthetic_release WHERE hospital_id = ? AND dataset_id = ?"
                " AND withdrawn_at IS NOT NULL AND list_contains(json_extract_string(files,"
                " '$[*].sha256'), ?) LIMIT 1", [hospital_id, dataset_id, table_sha256])
    rows = rows_as_dicts(cur)
    return _row(rows[0]) if rows else None


def latest_releases(cur: Cursor) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest release of every dataset that has one, by (hospital, dataset)."""
    cur.execute("SELECT * FROM synthetic_release QUALIFY row_number() OVER (PARTITION BY"
                " hospital_id, dataset_id ORDER BY created_at DESC, id DESC) = 1")
    return {(r["hospital_id"], r["dataset_id"]): _row(r) for r in rows_as_dicts(cur)}


def latest_release(cur: Cursor, hospital_id: str, dataset_id: str) -> dict[str, Any] | None:
    cur.execute("SELECT * FROM synthetic_release WHERE hospital_id = ? AND dataset_id = ?"
                " ORDER BY created_at DESC, id DESC LIMIT 1", [hospital_id, dataset_id])
    rows = rows_as_dicts(cur)
    return _row(rows[0]) if rows else None


def newest_status_by_hospital(cur: Cursor, dataset_id: str) -> dict[str, bool]:
    """Hospital -> whether its newest release of a dataset id was withdrawn (dataset ids
    repeat across nodes, so a researcher's download may need to pick one)."""
    cur.execute("SELECT hospital_id, withdrawn_at IS NOT NULL FROM synthetic_release"
                " WHERE dataset_id = ? QUALIFY row_number() OVER (PARTITION BY hospital_id"
                " ORDER BY created_at DESC, id DESC) = 1 ORDER BY hospital_id", [dataset_id])
    return {r[0]: bool(r[1]) for r in cur.fetchall()}
