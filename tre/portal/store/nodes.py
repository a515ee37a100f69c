"""SQL for the federation's node registry: hospital ↔ Flower SuperNode, fixed at enrolment."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from duckdb import DuckDBPyConnection as Cursor

from tre.core.db import Migration, rows_as_dicts

COMPONENT = "portal_nodes"
MIGRATIONS: list[Migration] = [
    (
        1,
        """
        CREATE TABLE federation_node (
            hospital_id VARCHAR PRIMARY KEY,
            public_key VARCHAR NOT NULL,
            node_id UBIGINT NOT NULL,
            superlink VARCHAR NOT NULL,
            registered_by VARCHAR NOT NULL,
            registered_at TIMESTAMPTZ NOT NULL
        )
        """,
    )
]


def upsert_node(cur: Cursor, hospital_id: str, public_key: str, node_id: int, superlink: str,
                by: str, now: datetime) -> None:
    cur.execute("DELETE FROM federation_node WHERE hospital_id = ?", [hospital_id])
    cur.execute("INSERT INTO federation_node VALUES (?, ?, ?, ?, ?, ?)",
                [hospital_id, public_key, node_id, superlink, by, now])


def get_node(cur: Cursor, hospital_id: str) -> dict[str, Any] | None:
    cur.execute("SELECT * FROM federation_node WHERE hospital_id = ?", [hospital_id])
    rows = rows_as_dicts(cur)
    return rows[0] if rows else None


def list_nodes(cur: Cursor) -> list[dict[str, Any]]:
    cur.execute("SELECT * FROM federation_node ORDER BY hospital_id")
    return rows_as_dicts(cur)
