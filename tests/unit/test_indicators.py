"""The 56c indicators from fixed times: counts per quarter, delays as median and 90th
percentile, each delay in the quarter it ended, refusals with their reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tre.portal.services.indicators import quarter, spread, summarise

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 20, 9, 0, tzinfo=UTC)


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def test_spread_is_the_median_and_the_90th_percentile():
    assert spread([]) == {"n": 0, "median": None, "p90": None}
    assert spread([4.0]) == {"n": 1, "median": 4.0, "p90": 4.0}
    assert spread([float(d) for d in range(1, 11)]) == {"n": 10, "median": 5.5, "p90": 9.1}


def test_quarters_count_and_time_what_ended_in_them():
    assert (quarter(at(0)), quarter(at(12))) == ("2026-Q1", "2026-Q2")
    figures = summarise(
        decisions=[
            # first submitted on day 0, sent back for changes, approved on day 30 (Q2)
            {"id": "r1", "status": "approved", "submitted_at": at(0), "decided_at": at(30)},
            {"id": "r2", "status": "rejected", "submitted_at": at(1), "decided_at": at(5)},
            {"id": "r3", "status": "approved", "submitted_at": at(2), "decided_at": at(15)},
        ],
        refusals=[{"request_id": "r2", "decided_at": at(5), "rationale": "no ethics approval"},
                  {"request_id": "r2", "decided_at": at(5), "rationale": "purpose too broad"}],
        permits=[{"id": "p1", "issued_at": at(30)}, {"id": "p3", "issued_at": at(15)}],
        runs=[{"id": "x1", "permit_id": "p3", "created_at": at(16)},
              {"id": "x2", "permit_id": "p3", "created_at": at(40)},
              {"id": "x3", "permit_id": "p1", "created_at": at(34)}],
        releases=[{"id": "o1", "released_at": at(18), "run_started_at": at(16)}],
    )
    q1, q2 = figures["quarters"]
    assert q1["quarter"] == "2026-Q1"
    assert (q1["permits_issued"], q1["runs"], q1["refusals"]) == (0, 0, 1)
    assert q1["days_to_decision"] == {"n": 1, "median": 4.0, "p90": 4.0}
    # 13 and 30 days: r1's clock ran from its first submission
    assert q2["days_to_decision"] == {"n": 2, "median": 21.5, "p90": 28.3}
    assert (q2["permits_issued"], q2["runs"], q2["outputs_released"]) == (2, 3, 1)
    assert q2["days_permit_to_first_run"] == {"n": 2, "median": 2.5, "p90": 3.7}
    assert q2["days_run_to_release"] == {"n": 1, "median": 2.0, "p90": 2.0}
    assert figures["totals"] == {"permits_issued": 2, "runs": 3, "outputs_released": 1,
                                 "refusals": 1}
    assert figures["refusals"] == [{"quarter": "2026-Q1", "decided_at": at(5),
                                    "reasons": ["no ethics approval", "purpose too broad"]}]
