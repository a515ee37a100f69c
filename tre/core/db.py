"""Embedded DuckDB store with serialised transactions and per-component migrations.

DuckDB allows one writer process per file and a connection is not safe to share
between threads at once, so every service opens one `Database` per file and all
work goes through `transaction()` or `reader()`, which hold a process-wide lock
around the one connection. That makes "state change + audit append" one atomic
unit (DESIGN §2.4, §9), and spares a new cursor (a new connection) per query.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import duckdb

T = TypeVar("T")

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
        self._depth = threading.local()  # open transactions of this thread
        self.generation = 0  # bumped by every committed transaction (see ReadCache)
        if not read_only:
            self._con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " component VARCHAR NOT NULL, version INTEGER NOT NULL,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
                " PRIMARY KEY (component, version))"
            )

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Yield a connection inside BEGIN/COMMIT; any exception rolls everything back.

        A transaction opened while this thread already has one runs on a cursor of its
        own (DuckDB: a separate connection), so it commits or fails on its own, as an
        audit row of a refusal must."""
        with self._lock, self._connection() as con:
            con.execute("BEGIN TRANSACTION")
            self._depth.n = getattr(self._depth, "n", 0) + 1
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            else:
                con.execute("COMMIT")
                self.generation += 1
            finally:
                self._depth.n -= 1

    @contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for reads, under the lock (outside a transaction: the shared one)."""
        with self._lock, self._connection() as con:
            yield con

    @contextmanager
    def _connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if getattr(self._depth, "n", 0) == 0:
            yield self._con  # the common case: no new connection per query
            return
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


class ReadCache:
    """Results of hot reads, kept until the next committed write to the same store.

    A process owns its DuckDB file (one writer process per file) and every write goes
    through `Database.transaction()`, so "no commit since" means "still what the store
    holds". Entries are tagged with the generation seen *before* loading: a write that
    lands during the load makes the entry stale at once, never wrongly fresh."""

    def __init__(self, db: Database, maxsize: int = 1024) -> None:
        self.db = db
        self.maxsize = maxsize
        self._items: OrderedDict[Hashable, tuple[int, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        generation = self.db.generation
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] == generation:
                self._items.move_to_end(key)
                return hit[1]
        value = load()
        with self._lock:
            self._items[key] = (generation, value)
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return value


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def rows_as_dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The rows of the last query on `cur` as dicts keyed by column name."""
    names = [d[0] for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
