"""Embedded DuckDB store with serialised transactions and per-component migrations.

DuckDB allows one writer per file and a connection is not safe to share between
threads, so every service opens one `Database` per file and all work goes
through `transaction()`, which holds a process-wide lock and a cursor. That makes
"state change + audit append" one atomic unit (DESIGN §2.4, §9).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

Migration = tuple[int, str]
"""(version, SQL script). Versions of one component are applied in ascending order."""


class Database:
    """One DuckDB file, one lock, one connection; cursors per transaction."""

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(str(self.path), read_only=read_only)
        self._lock = threading.RLock()
        if not read_only:
            self._con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " component VARCHAR NOT NULL, version INTEGER NOT NULL,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
                " PRIMARY KEY (component, version))"
            )

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Yield a cursor inside BEGIN/COMMIT; any exception rolls everything back."""
        with self._lock:
            cur = self._con.cursor()
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                cur.close()
                raise
            cur.execute("COMMIT")
            cur.close()

    @contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor for reads (still serialised: DuckDB connections are not thread-safe)."""
        with self._lock:
            cur = self._con.cursor()
            try:
                yield cur
            finally:
                cur.close()

    def migrate(self, component: str, migrations: Sequence[Migration]) -> int:
        """Apply the component's migrations not applied yet; returns the current version."""
        with self.transaction() as cur:
            done = {
                row[0]
                for row in cur.execute(
                    "SELECT version FROM schema_migrations WHERE component = ?", [component]
                ).fetchall()
            }
            for version, script in sorted(migrations):
                if version in done:
                    continue
                for statement in _split_sql(script):
                    cur.execute(statement)
                cur.execute(
                    "INSERT INTO schema_migrations (component, version) VALUES (?, ?)",
                    [component, version],
                )
                done.add(version)
        return max(done, default=0)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the store's lock with no transaction open (backups copy the file meanwhile)."""
        with self._lock:
            yield

    def checkpoint_unlocked(self) -> None:
        """Flush the write-ahead log into the main file; call inside `exclusive()`."""
        self._con.execute("CHECKPOINT")

    def close(self) -> None:
        with self._lock:
            self._con.close()


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def rows_as_dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The rows of the last query on `cur` as dicts keyed by column name."""
    names = [d[0] for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
