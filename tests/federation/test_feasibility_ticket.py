"""A node answers a feasibility query only with the portal's ticket for exactly that
query: this hospital, this cohort, this purpose, in its validity window, signed with
the pinned permit keys. Control of the SuperLink alone asks nothing.

Real node homes on DuckDB, the portal's real key ring class; the end-to-end path (a
query submitted straight to the SuperLink, refused by every node) is in
tests/runs/test_feasibility.py."""

from __future__ import annotations

import time

import pytest

from access_control.permits import PermitError, PermitKeyRing, verify_permit, verify_ticket
from federation.apps.feasibility import answer, feasibility_fab_hash
from federation.node.authorisation import QueryTicket
from federation.node.consent import RegimeConsentFilter
from federation.node.refusal import Refusal
from tre.core.schemas import CohortFilter, FeasibilityTicket, Purpose

from .helpers import claims, make_home, populate

pytestmark = pytest.mark.unit

COHORT = CohortFilter(dataset_id="pneumonia", modality=["XR"])


@pytest.fixture
def ring(tmp_path) -> PermitKeyRing:
    return PermitKeyRing.load_or_create(tmp_path / "portal-keys.json")


@pytest.fixture
def home(tmp_path, ring):
    home = make_home(tmp_path, "hospital-a", ring)
    populate(home, "pneumonia", 0, 3, limit=30)
    yield home
    home.db.close()


def ticket(cohort: CohortFilter = COHORT, *, hospitals: tuple[str, ...] = ("hospital-a",),
           purpose: Purpose = Purpose.SCIENTIFIC_RESEARCH, exp_in: int = 300,
           ticket_id: str = "fq_test", sub: str = "researcher-1") -> FeasibilityTicket:
    now = int(time.time())
    return FeasibilityTicket(iss="tre-portal-test", ticket_id=ticket_id, sub=sub,
                             purpose=purpose, cohort_digest=cohort.digest(),
                             hospitals=list(hospitals), iat=now, nbf=now, exp=now + exp_in)


def check_ticket(home, token: str, cohort: CohortFilter, purpose: Purpose, *,
                 now: float | None = None) -> FeasibilityTicket:
    """The node's ticket checks alone (the gate runs them first when it answers)."""
    credential = QueryTicket(token, cohort, "r", feasibility_fab_hash(), feasibility_fab_hash(),
                             now=now)
    return credential.authorise(home, cohort.dataset_id, purpose).ticket


def refusal_code(home, token: str, cohort: CohortFilter = COHORT,
                 purpose: Purpose = Purpose.SCIENTIFIC_RESEARCH) -> str:
    with pytest.raises(Refusal) as caught:
        check_ticket(home, token, cohort, purpose)
    return caught.value.code


def test_the_portals_ticket_for_this_query_is_accepted_and_audited(home, ring):
    token = ring.sign_ticket(ticket())
    accepted = check_ticket(home, token, COHORT, Purpose.SCIENTIFIC_RESEARCH)
    assert accepted.ticket_id == "fq_test"
    answer(home, COHORT, Purpose.SCIENTIFIC_RESEARCH, RegimeConsentFilter(), run_id="r1",
           ticket=token, app_hash=feasibility_fab_hash())
    entry = home.audit.entries(action="query.feasibility")[-1]
    assert entry.details["ticket_id"] == "fq_test"
    assert entry.details["researcher"] == "researcher-1"
    # the same ticket again (a replay from the SuperLink's run config) gets nothing
    assert refusal_code(home, ring.sign_ticket(ticket())) == "ticket-used"


def test_no_ticket_no_answer(home):
    assert refusal_code(home, "") == "no-ticket"
    assert refusal_code(home, "not-a-jws") == "ticket-invalid"


def test_a_ticket_for_another_hospital_cohort_or_purpose_is_refused(home, ring):
    assert refusal_code(home, ring.sign_ticket(ticket(hospitals=("hospital-b",)))) \
        == "wrong-hospital"
    wider = CohortFilter(dataset_id="pneumonia")
    assert refusal_code(home, ring.sign_ticket(ticket()), cohort=wider) == "ticket-mismatch"
    assert refusal_code(home, ring.sign_ticket(ticket()),
                        purpose=Purpose.AI_TRAINING) == "ticket-mismatch"


def test_expired_or_foreign_tickets_are_refused(home, ring, tmp_path):
    assert refusal_code(home, ring.sign_ticket(ticket(exp_in=-120))) == "ticket-invalid"
    other = PermitKeyRing.load_or_create(tmp_path / "someone-elses-keys.json")
    assert refusal_code(home, other.sign_ticket(ticket())) == "ticket-invalid"


def test_a_permit_is_not_a_ticket_and_a_ticket_is_not_a_permit(home, ring):
    permit = ring.sign(claims([("hospital-a", "pneumonia")]))
    assert refusal_code(home, permit) == "ticket-invalid"
    with pytest.raises(PermitError, match="type"):
        verify_ticket(permit, ring.public_jwks())
    with pytest.raises(PermitError, match="type"):
        verify_permit(ring.sign_ticket(ticket()), ring.public_jwks())


def test_a_researcher_has_a_daily_query_budget_at_each_node(home, ring):
    home.update_config(feasibility_queries_per_day=3)
    for i in range(3):  # three different cohorts: the budget counts queries, not cohorts
        cohort = CohortFilter(dataset_id="pneumonia", label=[i % 2], age_max=90 + i)
        token = ring.sign_ticket(ticket(cohort, ticket_id=f"fq_{i}"))
        assert check_ticket(home, token, cohort, Purpose.SCIENTIFIC_RESEARCH)
        answer(home, cohort, Purpose.SCIENTIFIC_RESEARCH, RegimeConsentFilter(),
               run_id=f"r{i}", ticket=token, app_hash=feasibility_fab_hash())
    assert refusal_code(home, ring.sign_ticket(ticket(ticket_id="fq_4"))) == "query-budget"
    # another researcher's budget is their own; tomorrow the first one may ask again
    other = ticket(ticket_id="fq_5", sub="researcher-2")
    assert check_ticket(home, ring.sign_ticket(other), COHORT, Purpose.SCIENTIFIC_RESEARCH)
    tomorrow = time.time() + 86400 + 60
    later = ticket(ticket_id="fq_6", exp_in=2 * 86400)
    assert check_ticket(home, ring.sign_ticket(later), COHORT, Purpose.SCIENTIFIC_RESEARCH,
                        now=tomorrow)


def test_only_the_nodes_own_feasibility_app_counts_and_a_refusal_is_audited_once(home, ring):
    before = len(home.audit.entries())
    with pytest.raises(Refusal) as caught:
        answer(home, COHORT, Purpose.SCIENTIFIC_RESEARCH, RegimeConsentFilter(), run_id="r9",
               ticket=ring.sign_ticket(ticket()), app_hash="0" * 64)
    assert caught.value.code == "wrong-app"
    assert [e.action for e in home.audit.entries()[before:]] == ["query.refused"]
