"""SQL for the audit checkpoints the portal holds: each party's signed chain heads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from duckdb import DuckDBPyConnection as Cursor

from tre.core.db import Migration, rows_as_dicts

COMPONENT = "portal_checkpoints"
MIGRATIONS: list[Migration] = [
    (
        1,
        """
        CREATE TABLE audit_checkpoint (
            party VARCHAR NOT NULL,
            seq BIGINT NOT NULL,
            hash VARCHAR NOT NULL,
            "at" VARCHAR NOT NULL,
            signature VARCHAR NOT NULL,
            public_key VARCHAR NOT NULL,
            received_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (party, seq)
        )
        """,
    )
]

_COLUMNS = 'party, seq, hash, "at", signature'  # `at` is a keyword of DuckDB's SQL


def insert(cur: Cursor, row: dict[str, Any], public_key: str, now: datetime) -> None:
    cur.execute("INSERT INTO audit_checkpoint VALUES (?, ?, ?, ?, ?, ?, ?)",
                [row["party"], row["seq"], row["hash"], row["at"], row["signature"],
                 public_key, now])


def at_seq(cur: Cursor, party: str, seq: int) -> dict[str, Any] | None:
    cur.execute(f"SELECT {_COLUMNS}, received_at FROM audit_checkpoint"
                " WHERE party = ? AND seq = ?", [party, seq])
    rows = rows_as_dicts(cur)
    return rows[0] if rows else None


def of_party(cur: Cursor, party: str) -> list[dict[str, Any]]:
    cur.execute(f"SELECT {_COLUMNS} FROM audit_checkpoint WHERE party = ? ORDER BY seq",
                [party])
    return rows_as_dicts(cur)


def latest(cur: Cursor) -> list[dict[str, Any]]:
    cur.execute(f"SELECT {_COLUMNS}, public_key, received_at FROM audit_checkpoint"
                " QUALIFY row_number() OVER (PARTITION BY party ORDER BY seq DESC) = 1"
                " ORDER BY party")
    return rows_as_dicts(cur)
