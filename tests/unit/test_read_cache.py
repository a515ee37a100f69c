"""The read cache serves a hot read until the next committed write, never after it."""

from __future__ import annotations

import pytest

from tre.core.db import Database, ReadCache


@pytest.fixture
def db(tmp_path):
    db = Database(tmp_path / "store.duckdb")
    with db.transaction() as cur:
        cur.execute("CREATE TABLE t (id VARCHAR PRIMARY KEY, v INTEGER)")
        cur.execute("INSERT INTO t VALUES ('a', 1)")
    yield db
    db.close()


def reader(db: Database, loads: list[int]):
    def load() -> int:
        with db.reader() as cur:
            value = cur.execute("SELECT v FROM t WHERE id = 'a'").fetchone()[0]
        loads.append(value)
        return value
    return load


def test_hits_until_a_write_commits(db):
    cache, loads = ReadCache(db), []
    assert [cache.get("a", reader(db, loads)) for _ in range(3)] == [1, 1, 1]
    assert loads == [1]
    with db.transaction() as cur:
        cur.execute("UPDATE t SET v = 2 WHERE id = 'a'")
    assert cache.get("a", reader(db, loads)) == 2
    assert loads == [1, 2]


def test_a_rolled_back_write_changes_nothing(db):
    cache, loads = ReadCache(db), []
    cache.get("a", reader(db, loads))
    with pytest.raises(RuntimeError), db.transaction() as cur:
        cur.execute("UPDATE t SET v = 3 WHERE id = 'a'")
        raise RuntimeError("refused")
    assert cache.get("a", reader(db, loads)) == 1


def test_a_write_during_the_load_leaves_the_entry_stale(db):
    cache, loads = ReadCache(db), []

    def load_then_write() -> int:
        value = reader(db, loads)()
        with db.transaction() as cur:  # another request commits while this one loads
            cur.execute("UPDATE t SET v = 4 WHERE id = 'a'")
        return value

    assert cache.get("a", load_then_write) == 1
    assert cache.get("a", reader(db, loads)) == 4


def test_size_is_bounded(db):
    cache = ReadCache(db, maxsize=2)
    for key in "xyz":
        cache.get(key, lambda k=key: k)
    assert cache.get("x", lambda: "reloaded") == "reloaded"
