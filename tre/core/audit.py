"""Hash-chained, append-only audit log: one implementation for the portal and every node.

Each row's hash is SHA-256 over the previous row's hash and the row's canonical JSON
(sequence number, time, actor, action, object, details). Editing, deleting,
inserting or reordering any row breaks the chain at that row, which `verify` names.
Appends take the caller's open transaction so that a state change and its audit
row commit or roll back together (DESIGN §2.4).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from tre.core import audit_details
from tre.core.audit_actions import AuditAction
from tre.core.db import Database, Migration

GENESIS_HASH = "0" * 64

MIGRATIONS: list[Migration] = [
    (
        1,
        """
        CREATE TABLE audit_log (
            seq BIGINT NOT NULL,
            ts VARCHAR NOT NULL,
            actor VARCHAR NOT NULL,
            action VARCHAR NOT NULL,
            object_type VARCHAR NOT NULL,
            object_id VARCHAR NOT NULL,
            details VARCHAR NOT NULL,
            prev_hash VARCHAR NOT NULL,
            hash VARCHAR NOT NULL
        )
        """,
    )
]
# No PRIMARY KEY on seq on purpose: the table must be able to hold a tampered
# state (duplicate or missing seq) so that `verify` can name it, rather than the
# database silently refusing the evidence.


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 kept, non-JSON types as strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    ts: str
    actor: str
    action: str
    object_type: str
    object_id: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def body(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "actor": self.actor,
            "action": self.action,
            "object_type": self.object_type,
            "object_id": self.object_id,
            "details": self.details,
        }

    def as_dict(self) -> dict[str, Any]:
        return {**self.body(), "prev_hash": self.prev_hash, "hash": self.hash}


def entry_hash(prev_hash: str, body: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(body)).encode()).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None
    #: checked against signed checkpoints: the one contradicted, else the newest agreed with
    checkpoint_seq: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "head_hash": self.head_hash,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
            "checkpoint_seq": self.checkpoint_seq,
        }


class AuditLog:
    """The audit table of one store. `append` joins the caller's transaction.

    Product code names an `AuditAction`, and `append` checks a member's details against
    its shape (`tre.core.audit_details`). A plain string is neither checked for membership
    nor for its details: it is the same chain that reads and verifies any party's log, old
    rows included (tests/unit/test_audit_actions.py keeps free strings out of the write
    sites)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("audit", MIGRATIONS)

    def append(
        self,
        cur: duckdb.DuckDBPyConnection,
        *,
        actor: str,
        action: AuditAction,
        object_type: str,
        object_id: str,
        details: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """Write one row in `cur`'s transaction; AuditDetailsError (nothing written) when a
        member's details lack its shape."""
        # Round-trip details through JSON so the hashed form is exactly what is stored.
        details_json = canonical_json(details or {})
        stored = json.loads(details_json)
        if isinstance(action, AuditAction):
            audit_details.check(action, stored)
        action = str(action)  # the plain value in the row and the hashed body
        last = cur.execute(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
        body = {
            "seq": seq,
            "ts": datetime.now(UTC).isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "object_type": object_type,
            "object_id": str(object_id),
            "details": stored,
        }
        digest = entry_hash(prev, body)
        cur.execute(
            "INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [seq, body["ts"], actor, action, object_type, body["object_id"], details_json,
             prev, digest],
        )
        return AuditEntry(**body, prev_hash=prev, hash=digest)

    def head(self, cur: duckdb.DuckDBPyConnection | None = None) -> tuple[int, str]:
        """(seq, hash) of the last row, or (0, the genesis hash) of an empty log: what a
        checkpoint signs (`tre.core.checkpoints`). `cur` reads inside a transaction."""
        query = "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
        if cur is not None:
            row = cur.execute(query).fetchone()
        else:
            with self.db.reader() as reader:
                row = reader.execute(query).fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)

    def record(self, *, action: AuditAction, **fields: Any) -> AuditEntry:
        """Append in a transaction of its own (for actions that change no other state);
        `fields` are `append`'s."""
        with self.db.transaction() as cur:
            return self.append(cur, action=action, **fields)

    def entries(
        self, *, after_seq: int = 0, limit: int | None = None,
        action: AuditAction | str | None = None,
    ) -> list[AuditEntry]:
        """Rows after `after_seq`; `action` filters (a plain string too: the web filter
        takes what an auditor types, and old logs may hold actions no longer written)."""
        sql = "SELECT * FROM audit_log WHERE seq > ?"
        params: list[Any] = [after_seq]
        if action:
            sql += " AND action = ?"
            params.append(str(action))
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self.db.reader() as cur:
            return [AuditLog.row_to_entry(r) for r in cur.execute(sql, params).fetchall()]

    def count(self) -> int:
        with self.db.reader() as cur:
            return cur.execute("SELECT count(*) FROM audit_log").fetchone()[0]

    def verify(self) -> VerifyResult:
        # Sorted by seq (ties by physical order): a deleted row leaves a gap, an
        # inserted one a duplicate or shifted seq, a renumbered one a hash mismatch.
        with self.db.reader() as cur:
            rows = cur.execute("SELECT * FROM audit_log ORDER BY seq, rowid").fetchall()
        return verify_entries(AuditLog.row_to_entry(r) for r in rows)

    @staticmethod
    def row_to_entry(row: tuple) -> AuditEntry:
        seq, ts, actor, action, object_type, object_id, details, prev_hash, digest = row
        return AuditEntry(seq, ts, actor, action, object_type, object_id, json.loads(details),
                          prev_hash, digest)

    def export_jsonl(self) -> Iterator[str]:
        for entry in self.entries():
            yield canonical_json(entry.as_dict())


def verify_entries(entries: Iterable[AuditEntry]) -> VerifyResult:
    """Walk the chain in stored order; name the first row that breaks it."""
    prev = GENESIS_HASH
    expected_seq = 1
    n = 0
    for entry in entries:
        n += 1
        if entry.seq != expected_seq:
            problem = (
                f"row {entry.seq} found where row {expected_seq} was expected "
                "(a row was deleted, inserted or moved)"
            )
            return VerifyResult(False, n, prev, entry.seq, problem)
        if entry.prev_hash != prev:
            return VerifyResult(
                False, n, prev, entry.seq,
                f"row {entry.seq} does not link to the row before it",
            )
        if entry_hash(prev, entry.body()) != entry.hash:
            return VerifyResult(
                False, n, prev, entry.seq,
                f"row {entry.seq} was altered after it was written (hash mismatch)",
            )
        prev = entry.hash
        expected_seq += 1
    return VerifyResult(True, n, prev)


def entries_from_store(path: str | Path) -> list[AuditEntry]:
    """Read the log of a store file that no service holds open (offline audits, restores)."""
    database = Database(path, read_only=True)
    try:
        with database.reader() as cur:
            rows = cur.execute("SELECT * FROM audit_log ORDER BY seq, rowid").fetchall()
    finally:
        database.close()
    return [AuditLog.row_to_entry(r) for r in rows]


def parse_jsonl(lines: Iterable[str]) -> Iterator[AuditEntry]:
    """Read an exported log back (for offline verification by an auditor)."""
    for line in lines:
        if line.strip():
            d = json.loads(line)
            yield AuditEntry(**d)


