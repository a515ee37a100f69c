"""When a permit stopped being usable, derived from the permit table alone (the consent
activity report needs it; the table keeps a time for revocations only)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tre.core.db import Database
from tre.portal.store import access, migrate_all
from tre.portal.store import runs as run_store

pytestmark = pytest.mark.unit

CLAIMS = {"purpose": "ai_training", "datasets": [{"node_id": "hospital-a", "dataset_id": "x",
                                                   "epsilon_cap": 8.0, "delta_cap": 1e-5}]}


def day(month: int, d: int, year: int = 2026) -> datetime:
    return datetime(year, month, d, tzinfo=UTC)


def test_each_permit_ends_as_its_status_and_times_say(tmp_path):
    db = Database(tmp_path / "portal.duckdb")
    migrate_all(db)
    permits = {  # status, issued, expires, revoked
        "in_force": ("active", day(3, 1), day(12, 30), None),
        "revoked": ("revoked", day(3, 1), day(12, 30), day(5, 1)),
        "expired": ("expired", day(1, 1), day(2, 1), None),
        "unmarked": ("active", day(1, 1), day(2, 2), None),  # past expiry, not yet marked
        "exhausted": ("exhausted", day(4, 1), day(12, 30), None),
        "late_revoke": ("revoked", day(1, 1), day(2, 3), day(6, 1)),  # expired first
        "last_year": ("active", day(1, 1, 2025), day(6, 1, 2025), None),
    }
    with db.transaction() as cur:
        for pid, (status, issued, expires, revoked) in permits.items():
            access.insert_request(cur, f"r_{pid}", "sub", "alice", {"title": pid}, issued)
            access.insert_permit(cur, pid, f"r_{pid}", "sub", "token", CLAIMS, issued, expires)
            if status != "active":
                access.set_permit_status(cur, pid, status, revoked_at=revoked)
        run_store.insert_run(cur, {"id": "run_1", "permit_id": "exhausted", "holder_sub": "sub",
                                   "holder_username": "alice", "params": {},
                                   "results_dir": "/nonexistent", "created_at": day(4, 2)})
        run_store.update_run(cur, "run_1", day(4, 3), state="completed",
                             epsilon_per_node={"hospital-a": 8.0})
    with db.reader() as cur:
        found = {p["id"]: p for p in access.permits_in_period(cur, day(1, 1), day(1, 1, 2027),
                                                              now=day(11, 29))}
        runs = run_store.runs_started_between(cur, ["exhausted", "in_force"], day(1, 1),
                                              day(1, 1, 2027))
    assert set(found) == set(permits) - {"last_year"}
    assert {pid: (p["ended_how"], p["ended_at"]) for pid, p in found.items()} == {
        "in_force": (None, None),
        "revoked": ("revoked", day(5, 1)),
        "expired": ("expired", day(2, 1)),
        "unmarked": ("expired", day(2, 2)),
        "exhausted": ("exhausted", day(4, 3)),  # when its last run ended
        "late_revoke": ("expired", day(2, 3)),
    }
    assert found["in_force"]["until"] == day(12, 30)
    assert found["revoked"]["request"]["title"] == "revoked"
    assert found["revoked"]["applicant_username"] == "alice"
    assert [(r["id"], r["epsilon_per_node"], r["attestations"]) for r in runs] == [
        ("run_1", {"hospital-a": 8.0}, None)]
