"""SQL for run outputs held in the airlock and the checkers' reviews of them."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from duckdb import DuckDBPyConnection as Cursor

from tre.core.db import Migration, rows_as_dicts

COMPONENT = "portal_airlock"
MIGRATIONS: list[Migration] = [
    (
        1,
        """
        CREATE TABLE output (
            id VARCHAR PRIMARY KEY,
            run_id VARCHAR NOT NULL,
            permit_id VARCHAR NOT NULL,
            holder_sub VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            files VARCHAR NOT NULL,
            attestations VARCHAR NOT NULL,
            checks VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            decided_at TIMESTAMPTZ
        );
        CREATE TABLE output_review (
            output_id VARCHAR NOT NULL,
            checker_sub VARCHAR NOT NULL,
            checker_username VARCHAR NOT NULL,
            decision VARCHAR NOT NULL,
            rationale VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (output_id, checker_sub)
        )
        """,
    )
]

_JSON = ("files", "attestations", "checks")


def insert_output(cur: Cursor, row: dict[str, Any]) -> None:
    cur.execute(
        "INSERT INTO output (id, run_id, permit_id, holder_sub, status, files, attestations,"
        " checks, created_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
        [row["id"], row["run_id"], row["permit_id"], row["holder_sub"],
         *(json.dumps(row[k]) for k in _JSON), row["created_at"]],
    )


def _row(row: dict[str, Any]) -> dict[str, Any]:
    for key in _JSON:
        row[key] = json.loads(row[key])
    return row


def get_output(cur: Cursor, oid: str) -> dict[str, Any] | None:
    cur.execute("SELECT * FROM output WHERE id = ?", [oid])
    rows = rows_as_dicts(cur)
    return _row(rows[0]) if rows else None


def list_outputs(cur: Cursor, holder_sub: str | None = None) -> list[dict[str, Any]]:
    if holder_sub is None:
        cur.execute("SELECT * FROM output ORDER BY created_at")
    else:
        cur.execute("SELECT * FROM output WHERE holder_sub = ? ORDER BY created_at", [holder_sub])
    return [_row(r) for r in rows_as_dicts(cur)]


def set_status(cur: Cursor, oid: str, status: str, now: datetime, decided: bool) -> None:
    cur.execute("UPDATE output SET status = ?, decided_at = CASE WHEN ? THEN ? ELSE decided_at"
                " END WHERE id = ?", [status, decided, now, oid])


def insert_review(cur: Cursor, oid: str, sub: str, username: str, decision: str,
                  rationale: str, now: datetime) -> None:
    cur.execute("INSERT INTO output_review VALUES (?, ?, ?, ?, ?, ?)",
                [oid, sub, username, decision, rationale, now])


def reviews_for(cur: Cursor, oid: str) -> list[dict[str, Any]]:
    cur.execute("SELECT * FROM output_review WHERE output_id = ? ORDER BY created_at", [oid])
    return rows_as_dicts(cur)


def releases(cur: Cursor) -> list[dict[str, Any]]:
    """Each released output, with when it was released and when its run was started."""
    cur.execute("SELECT o.id, o.decided_at AS released_at, r.created_at AS run_started_at"
                " FROM output o JOIN run r ON r.id = o.run_id"
                " WHERE o.status = 'released' ORDER BY o.decided_at")
    return rows_as_dicts(cur)
