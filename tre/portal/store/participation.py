"""SQL for run membership: per Flower run, hospital and dataset, the tags of the people
whose records the run used (`tre.core.run_members`), as each node reported them."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
from duckdb import DuckDBPyConnection as Cursor

from tre.core.db import Migration

COMPONENT = "portal_participation"
MIGRATIONS: list[Migration] = [
    (
        1,
        """
        CREATE TABLE run_member (
            flower_run_id UBIGINT NOT NULL,
            hospital_id VARCHAR NOT NULL,
            dataset_id VARCHAR NOT NULL,
            tag VARCHAR NOT NULL,
            reported_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (flower_run_id, hospital_id, dataset_id, tag)
        )
        """,
    )
]


def add_members(cur: Cursor, flower_run_id: int, hospital_id: str, dataset_id: str,
                tags: list[str], now: datetime) -> int:
    """Insert the tags not yet known (a node reports every round); how many were new."""
    before = _count(cur, flower_run_id, hospital_id, dataset_id)
    cur.register("member_incoming", pa.table({"tag": pa.array(tags, pa.string())}))
    try:
        cur.execute("INSERT INTO run_member SELECT DISTINCT ?, ?, ?, tag, ? FROM member_incoming"
                    " ON CONFLICT DO NOTHING", [flower_run_id, hospital_id, dataset_id, now])
    finally:
        cur.unregister("member_incoming")
    return _count(cur, flower_run_id, hospital_id, dataset_id) - before


def _count(cur: Cursor, flower_run_id: int, hospital_id: str, dataset_id: str) -> int:
    return cur.execute("SELECT count(*) FROM run_member WHERE flower_run_id = ?"
                       " AND hospital_id = ? AND dataset_id = ?",
                       [flower_run_id, hospital_id, dataset_id]).fetchall()[0][0]


def reported_runs(cur: Cursor) -> list[int]:
    """Flower runs some node reported members of."""
    return [r[0] for r in cur.execute(
        "SELECT DISTINCT flower_run_id FROM run_member ORDER BY 1").fetchall()]


def hospitals_with(cur: Cursor, tags: dict[int, str]) -> dict[int, int]:
    """Per Flower run, at how many hospitals the one tag given for that run was reported."""
    if not tags:
        return {}
    wanted = pa.table({"flower_run_id": pa.array(list(tags), pa.uint64()),
                       "tag": pa.array(list(tags.values()), pa.string())})
    cur.register("member_wanted", wanted)
    try:
        rows = cur.execute(
            "SELECT m.flower_run_id, count(DISTINCT m.hospital_id) FROM run_member m"
            " JOIN member_wanted w USING (flower_run_id, tag) GROUP BY 1").fetchall()
    finally:
        cur.unregister("member_wanted")
    return {int(r): n for r, n in rows}
