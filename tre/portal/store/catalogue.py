"""SQL for the dataset catalogue that nodes publish to."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from duckdb import DuckDBPyConnection as Cursor

from tre.core.db import Migration, rows_as_dicts

COMPONENT = "portal_catalogue"
MIGRATIONS: list[Migration] = [
    (
        1,
        """
        CREATE TABLE catalogue_dataset (
            hospital_id VARCHAR NOT NULL,
            dataset_id VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            title VARCHAR NOT NULL,
            descriptor VARCHAR NOT NULL,
            published_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (hospital_id, dataset_id)
        )
        """,
    )
]


def upsert_dataset(cur: Cursor, hospital_id: str, dataset_id: str, kind: str, title: str,
                   descriptor: dict[str, Any], now: datetime) -> None:
    cur.execute("DELETE FROM catalogue_dataset WHERE hospital_id = ? AND dataset_id = ?",
                [hospital_id, dataset_id])
    cur.execute("INSERT INTO catalogue_dataset VALUES (?, ?, ?, ?, ?, ?)",
                [hospital_id, dataset_id, kind, title, json.dumps(descriptor), now])


def _row(row: dict[str, Any]) -> dict[str, Any]:
    row["descriptor"] = json.loads(row["descriptor"])
    return row


def list_datasets(cur: Cursor) -> list[dict[str, Any]]:
    cur.execute("SELECT * FROM catalogue_dataset ORDER BY hospital_id, dataset_id")
    return [_row(r) for r in rows_as_dicts(cur)]


def get_dataset(cur: Cursor, hospital_id: str, dataset_id: str) -> dict[str, Any] | None:
    cur.execute("SELECT * FROM catalogue_dataset WHERE hospital_id = ? AND dataset_id = ?",
                [hospital_id, dataset_id])
    rows = rows_as_dicts(cur)
    return _row(rows[0]) if rows else None
