"""The public indicators of proposal 56c: what the TRE hosted and how long access took.

Per calendar quarter: permits issued, runs started, outputs released, refusals; and
three access delays as median and 90th percentile in days — request to decision
(counted from the first submission, so a request sent back for changes does not
restart its clock), permit to its first run, run to its released output. Each delay
falls in the quarter in which it ended. Then the refusals with their reasons and the
audit results (each party's newest checkpoint and last independent verification).
Aggregates and the reasons the register already publishes: no personal data.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from tre.portal.context import Portal, utcnow
from tre.portal.services import checkpoints
from tre.portal.store import access as access_store
from tre.portal.store import airlock as airlock_store
from tre.portal.store import runs as run_store

DELAYS = ("days_to_decision", "days_permit_to_first_run", "days_run_to_release")
COUNTS = ("permits_issued", "runs", "outputs_released", "refusals")


def quarter(when: datetime) -> str:
    return f"{when.year}-Q{(when.month - 1) // 3 + 1}"


def days_between(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / 86400


def spread(days: list[float]) -> dict[str, Any]:
    """How many, the median and the 90th percentile (linear between closest ranks)."""
    if not days:
        return {"n": 0, "median": None, "p90": None}
    p90 = (statistics.quantiles(days, n=10, method="inclusive")[8] if len(days) > 1
           else days[0])
    return {"n": len(days), "median": round(statistics.median(days), 2), "p90": round(p90, 2)}


def summarise(decisions: list[dict[str, Any]], refusals: list[dict[str, Any]],
              permits: list[dict[str, Any]], runs: list[dict[str, Any]],
              releases: list[dict[str, Any]]) -> dict[str, Any]:
    """The indicators from the store's rows (a pure function: tests give it fixed times)."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    delays: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for d in decisions:
        delays[quarter(d["decided_at"])]["days_to_decision"].append(
            days_between(d["submitted_at"], d["decided_at"]))
        if d["status"] == "rejected":
            counts[quarter(d["decided_at"])]["refusals"] += 1
    issued = {p["id"]: p["issued_at"] for p in permits}
    for p in permits:
        counts[quarter(p["issued_at"])]["permits_issued"] += 1
    first_run: dict[str, datetime] = {}
    for r in runs:
        counts[quarter(r["created_at"])]["runs"] += 1
        first_run.setdefault(r["permit_id"], r["created_at"])  # the rows come oldest first
    for permit_id, started in first_run.items():
        if permit_id in issued:
            delays[quarter(started)]["days_permit_to_first_run"].append(
                days_between(issued[permit_id], started))
    for o in releases:
        counts[quarter(o["released_at"])]["outputs_released"] += 1
        delays[quarter(o["released_at"])]["days_run_to_release"].append(
            days_between(o["run_started_at"], o["released_at"]))
    reasons: dict[str, dict[str, Any]] = {}
    for r in refusals:
        entry = reasons.setdefault(r["request_id"], {"quarter": quarter(r["decided_at"]),
                                                     "decided_at": r["decided_at"],
                                                     "reasons": []})
        entry["reasons"].append(r["rationale"])
    quarters = sorted(counts.keys() | delays.keys())
    return {
        "totals": {name: sum(c[name] for c in counts.values()) for name in COUNTS},
        "quarters": [{"quarter": q, **{name: counts[q][name] for name in COUNTS},
                      **{name: spread(delays[q][name]) for name in DELAYS}}
                     for q in quarters],
        "refusals": list(reasons.values()),
    }


def indicators(portal: Portal) -> dict[str, Any]:
    """The public indicators, as of now."""
    with portal.db.reader() as cur:
        figures = summarise(access_store.decisions(cur), access_store.refusal_reasons(cur),
                            access_store.permit_issues(cur), run_store.run_starts(cur),
                            airlock_store.releases(cur))
    return {"generated_at": utcnow(), **figures, "audit": checkpoints.audit_status(portal)}
