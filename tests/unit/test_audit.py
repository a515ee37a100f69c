"""The hash chain detects every kind of tampering and names the row (invariant 4)."""

import json

import pytest
from typer.testing import CliRunner

from tre.cli.main import app as cli
from tre.core.audit import AuditLog, parse_jsonl, verify_entries
from tre.core.db import Database

pytestmark = pytest.mark.unit


@pytest.fixture
def log(tmp_path):
    db = Database(tmp_path / "store.duckdb")
    audit = AuditLog(db)
    for i in range(1, 6):
        audit.record(actor="alice", action="thing.change", object_type="thing",
                     object_id=str(i), details={"n": i, "note": "héllo"})
    yield audit
    db.close()


def tamper(audit: AuditLog, sql: str, params=()):
    with audit.db.transaction() as cur:
        cur.execute(sql, list(params))


def test_intact_chain_verifies(log):
    result = log.verify()
    assert result.ok and result.rows == 5 and result.first_bad_seq is None


def test_edit_is_detected_and_named(log):
    tamper(log, "UPDATE audit_log SET details = ? WHERE seq = 3", [json.dumps({"n": 99})])
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 3
    assert "altered" in result.problem


def test_edit_of_actor_with_recomputed_hash_breaks_the_next_link(log):
    from tre.core.audit import entry_hash

    entry = log.entries()[1]
    body = entry.body() | {"actor": "mallory"}
    new_hash = entry_hash(entry.prev_hash, body)
    tamper(log, "UPDATE audit_log SET actor = 'mallory', hash = ? WHERE seq = 2", [new_hash])
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 3


def test_delete_is_detected(log):
    tamper(log, "DELETE FROM audit_log WHERE seq = 2")
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 3
    assert "deleted" in result.problem


def test_insert_is_detected(log):
    row = log.entries()[2]
    tamper(log, "INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
           [3, row.ts, "mallory", "thing.change", "thing", "x", "{}", row.prev_hash, row.hash])
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 3


def test_reorder_is_detected(log):
    a, b = log.entries()[1], log.entries()[2]
    tamper(log, "UPDATE audit_log SET seq = -1 WHERE seq = ?", [a.seq])
    tamper(log, "UPDATE audit_log SET seq = ? WHERE seq = ?", [a.seq, b.seq])
    tamper(log, "UPDATE audit_log SET seq = ? WHERE seq = -1", [b.seq])
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 2


def test_failed_state_change_leaves_no_audit_row(log):
    with pytest.raises(RuntimeError), log.db.transaction() as cur:
        log.append(cur, actor="alice", action="x", object_type="t", object_id="1")
        raise RuntimeError("the state change failed")
    assert log.count() == 5 and log.verify().ok


def test_export_round_trips_and_verifies_offline(log):
    lines = list(log.export_jsonl())
    assert verify_entries(parse_jsonl(lines)).ok
    doctored = lines[:2] + lines[3:]
    assert verify_entries(parse_jsonl(doctored)).first_bad_seq == 4


def test_cli_verify_detects_tampering(tmp_path):
    path = tmp_path / "p.duckdb"
    db = Database(path)
    audit = AuditLog(db)
    for i in range(3):
        audit.record(actor="a", action="b", object_type="c", object_id=str(i))
    tamper(audit, "UPDATE audit_log SET actor = 'eve' WHERE seq = 2")
    db.close()
    runner = CliRunner()
    result = runner.invoke(cli, ["audit", "verify", "--db", str(path)])
    assert result.exit_code == 1
    assert "row 2" in result.output
    exported = runner.invoke(cli, ["audit", "export", "--db", str(path)])
    assert exported.exit_code == 0 and len(exported.stdout.strip().splitlines()) == 3
