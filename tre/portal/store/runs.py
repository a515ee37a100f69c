"""SQL for federated runs started from the portal."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from duckdb import DuckDBPyConnection as Cursor

from tre.core.db import Migration, rows_as_dicts

COMPONENT = "portal_runs"
MIGRATIONS: list[Migration] = [
    (
        1,
        """
        CREATE TABLE run (
            id VARCHAR PRIMARY KEY,
            permit_id VARCHAR NOT NULL,
            holder_sub VARCHAR NOT NULL,
            holder_username VARCHAR NOT NULL,
            state VARCHAR NOT NULL,
            params VARCHAR NOT NULL,
            flower_run_id UBIGINT,
            results_dir VARCHAR NOT NULL,
            rounds VARCHAR NOT NULL DEFAULT '[]',
            epsilon_per_node VARCHAR NOT NULL DEFAULT '{}',
            output_id VARCHAR,
            error VARCHAR,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        )
        """,
    ),
    (
        2,
        # a run's credential to report results (services.results): its digest only
        """
        CREATE TABLE run_credential (
            digest VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,
            object_id VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL,
            flower_run_id UBIGINT,
            report_at TIMESTAMPTZ
        )
        """,
    ),
]

_JSON = ("params", "rounds", "epsilon_per_node")


def insert_run(cur: Cursor, row: dict[str, Any]) -> None:
    cur.execute(
        "INSERT INTO run (id, permit_id, holder_sub, holder_username, state, params,"
        " results_dir, created_at, updated_at) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
        [row["id"], row["permit_id"], row["holder_sub"], row["holder_username"],
         json.dumps(row["params"]), row["results_dir"], row["created_at"], row["created_at"]],
    )


def _row(row: dict[str, Any]) -> dict[str, Any]:
    for key in _JSON:
        row[key] = json.loads(row[key])
    return row


def get_run(cur: Cursor, run_id: str) -> dict[str, Any] | None:
    cur.execute("SELECT * FROM run WHERE id = ?", [run_id])
    rows = rows_as_dicts(cur)
    return _row(rows[0]) if rows else None


def get_run_by_flower_id(cur: Cursor, flower_run_id: int) -> dict[str, Any] | None:
    cur.execute("SELECT * FROM run WHERE flower_run_id = ?", [flower_run_id])
    rows = rows_as_dicts(cur)
    return _row(rows[0]) if rows else None


def list_runs(cur: Cursor, holder_sub: str | None = None,
              states: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    sql, params = "SELECT * FROM run WHERE true", []
    if holder_sub is not None:
        sql += " AND holder_sub = ?"
        params.append(holder_sub)
    if states:
        sql += f" AND state IN ({', '.join('?' for _ in states)})"
        params.extend(states)
    cur.execute(sql + " ORDER BY created_at", params)
    return [_row(r) for r in rows_as_dicts(cur)]


def update_run(cur: Cursor, run_id: str, now: datetime, **values: Any) -> None:
    sets, params = ["updated_at = ?"], [now]
    for key, value in values.items():
        sets.append(f"{key} = ?")
        params.append(json.dumps(value) if key in _JSON else value)
    cur.execute(f"UPDATE run SET {', '.join(sets)} WHERE id = ?", [*params, run_id])


def count_by_state(cur: Cursor) -> list[tuple[str, int]]:
    return cur.execute("SELECT state, count(*) FROM run GROUP BY state").fetchall()


def insert_credential(cur: Cursor, digest: str, kind: str, object_id: str, now: datetime,
                      expires_at: datetime) -> None:
    cur.execute("INSERT INTO run_credential (digest, kind, object_id, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)", [digest, kind, object_id, now, expires_at])


def get_credential(cur: Cursor, digest: str) -> dict[str, Any] | None:
    cur.execute("SELECT * FROM run_credential WHERE digest = ?", [digest])
    rows = rows_as_dicts(cur)
    return rows[0] if rows else None


def get_credential_of(cur: Cursor, kind: str, object_id: str) -> dict[str, Any] | None:
    cur.execute("SELECT * FROM run_credential WHERE kind = ? AND object_id = ?", [kind, object_id])
    rows = rows_as_dicts(cur)
    return rows[0] if rows else None


def bind_credential(cur: Cursor, digest: str, flower_run_id: int) -> None:
    cur.execute("UPDATE run_credential SET flower_run_id = ? WHERE digest = ?",
                [flower_run_id, digest])


def mark_reported(cur: Cursor, digest: str, now: datetime) -> None:
    cur.execute("UPDATE run_credential SET report_at = ? WHERE digest = ?", [now, digest])


def run_starts(cur: Cursor) -> list[dict[str, Any]]:
    """When each run was started, under which permit."""
    cur.execute("SELECT id, permit_id, created_at FROM run ORDER BY created_at")
    return rows_as_dicts(cur)


def runs_started_between(cur: Cursor, permit_ids: list[str], start: datetime, end: datetime
                         ) -> list[dict[str, Any]]:
    """Runs under these permits started in [start, end), each counted in one year only,
    with the node attestations of the output it left in the airlock (None if none)."""
    if not permit_ids:
        return []
    cur.execute(
        "SELECT r.id, r.permit_id, r.holder_username, r.state, r.epsilon_per_node,"
        " r.created_at, r.updated_at, o.attestations"
        " FROM run r LEFT JOIN output o ON o.id = r.output_id"
        " WHERE r.permit_id IN (SELECT unnest(?)) AND r.created_at >= ? AND r.created_at < ?"
        " ORDER BY r.created_at, r.id",
        [permit_ids, start, end],
    )
    rows = rows_as_dicts(cur)
    for row in rows:
        row["epsilon_per_node"] = json.loads(row["epsilon_per_node"])
        row["attestations"] = json.loads(row["attestations"]) if row["attestations"] else None
    return rows
