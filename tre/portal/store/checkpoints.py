"""SQL for the audit checkpoints the portal holds (each party's signed chain heads), the
nodes' signed log exports it relays to auditors, and the auditors' verification results."""

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
    ),
    (
        2,
        """
        CREATE TABLE node_audit_export (
            party VARCHAR NOT NULL,
            uploaded_at TIMESTAMPTZ NOT NULL,
            uploaded_by VARCHAR NOT NULL,
            row_count BIGINT NOT NULL,
            sha256 VARCHAR NOT NULL,
            signature VARCHAR NOT NULL,
            jsonl VARCHAR NOT NULL,
            PRIMARY KEY (party, uploaded_at)
        );
        CREATE TABLE audit_verification (
            id VARCHAR PRIMARY KEY,
            party VARCHAR NOT NULL,
            ok BOOLEAN NOT NULL,
            row_count BIGINT NOT NULL,
            checkpoint_seq BIGINT,
            problem VARCHAR,
            verified_by VARCHAR NOT NULL,
            verified_at TIMESTAMPTZ NOT NULL
        )
        """,
    ),
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


def insert_export(cur: Cursor, row: dict[str, Any]) -> None:
    cur.execute("INSERT INTO node_audit_export VALUES (?, ?, ?, ?, ?, ?, ?)",
                [row["party"], row["uploaded_at"], row["uploaded_by"], row["row_count"],
                 row["sha256"], row["signature"], row["jsonl"]])


def latest_export(cur: Cursor, party: str) -> dict[str, Any] | None:
    cur.execute("SELECT * FROM node_audit_export WHERE party = ?"
                " ORDER BY uploaded_at DESC LIMIT 1", [party])
    rows = rows_as_dicts(cur)
    return rows[0] if rows else None


def insert_verification(cur: Cursor, row: dict[str, Any]) -> None:
    cur.execute("INSERT INTO audit_verification VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [row["id"], row["party"], row["ok"], row["row_count"], row["checkpoint_seq"],
                 row["problem"], row["verified_by"], row["verified_at"]])


def latest_verifications(cur: Cursor) -> list[dict[str, Any]]:
    """The newest verification of each party."""
    cur.execute("SELECT * FROM audit_verification"
                " QUALIFY row_number() OVER (PARTITION BY party ORDER BY verified_at DESC) = 1"
                " ORDER BY party")
    return rows_as_dicts(cur)
