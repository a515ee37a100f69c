"""The node's gate is the one place where a use of data is audited: its read on success,
any refusal (from its checks or from the body) exactly once, and nothing read then.

Real DuckDB node homes and permits signed with the portal's key ring class."""

from __future__ import annotations

from pathlib import Path

import pytest

from access_control.permits import PermitKeyRing
from federation.apps.fab import fab_hash
from federation.node.authorisation import RunPermit
from federation.node.gate import Action, Gate
from federation.node.home import NodeHome
from federation.node.refusal import Refusal
from federation.node.revocations import RevocationList
from federation.training.data import split_pseudonyms

from .helpers import claims, make_home, populate, tickets_for

pytestmark = pytest.mark.unit

DATASET = "pneu"


@pytest.fixture
def ring(tmp_path: Path) -> PermitKeyRing:
    return PermitKeyRing.load_or_create(tmp_path / "portal-keys.json")


@pytest.fixture
def home(tmp_path: Path, ring: PermitKeyRing) -> NodeHome:
    h = make_home(tmp_path, "hospital-a", ring)
    populate(h, DATASET, 0, 3, limit=60)
    yield h
    h.db.close()


def permit(ring: PermitKeyRing, hospital: str = "hospital-a") -> RunPermit:
    token = ring.sign(claims([(hospital, DATASET)]))
    return RunPermit(token, fab_hash(), "run-1",
                     revocations=lambda: RevocationList(frozenset(), "test", 0),
                     run_tickets=tickets_for(ring, token))


def subjects_of_test_split(home: NodeHome, grant: object) -> dict[str, list[str]]:
    return {DATASET: split_pseudonyms(home.db, DATASET, "test")}


READ_TEST = Action("evaluate", "test", subjects_of_test_split)


def new_entries(home: NodeHome, before: int) -> list:
    return home.audit.entries()[before:]


def test_a_successful_open_audits_the_read_with_its_counts(home, ring):
    before = len(home.audit.entries())
    with Gate(home).open(READ_TEST, None, None, permit(ring)) as cohort:
        assert cohort.dataset == DATASET and cohort.excluded == 0
        assert cohort.pseudonyms == split_pseudonyms(home.db, DATASET, "test")
        assert cohort.reservation is None
        cohort.read(len(cohort.pseudonyms) - 1)
    (entry,) = new_entries(home, before)
    assert entry.action == "data.read" and entry.object_id == DATASET
    assert entry.details["records"] == len(cohort.pseudonyms) - 1
    assert entry.details["excluded_by_consent"] == 0
    assert entry.details["split"] == "test" and entry.details["for"] == "evaluate"
    assert entry.details["permit_id"] == cohort.authorisation.claims.permit_id


def test_a_refusal_inside_the_body_is_audited_once_and_nothing_is_read(home, ring):
    before = len(home.audit.entries())
    gate = Gate(home)
    with pytest.raises(Refusal) as err, gate.open(READ_TEST, None, None, permit(ring)):
        raise Refusal("data-shape", "not the images the run expects")
    assert err.value.code == "data-shape"
    (entry,) = new_entries(home, before)
    assert entry.action == "federation.refused"
    assert entry.details["code"] == "data-shape" and entry.details["stage"] == "read"


def test_a_refused_credential_is_audited_once_and_the_body_never_runs(home, ring):
    before = len(home.audit.entries())
    gate, refused = Gate(home), permit(ring, "hospital-b")
    with pytest.raises(Refusal) as err, gate.open(READ_TEST, None, None, refused):
        pytest.fail("the body ran under a refused permit")
    assert err.value.code == "wrong-hospital"
    assert [e.action for e in new_entries(home, before)] == ["federation.refused"]


def test_a_body_that_fails_after_reading_leaves_its_read_audited(home, ring):
    """A crash is no refusal (nothing to audit as one), but what was read before it is."""
    before = len(home.audit.entries())
    with pytest.raises(RuntimeError), Gate(home).open(READ_TEST, None, None,
                                                      permit(ring)) as cohort:
        cohort.read(7)
        raise RuntimeError("the model crashed")
    (entry,) = new_entries(home, before)
    assert entry.action == "data.read" and entry.details["records"] == 7
    with pytest.raises(RuntimeError), Gate(home).open(READ_TEST, None, None, permit(ring)):
        raise RuntimeError("crashed before reading")
    assert len(new_entries(home, before)) == 1, "nothing read: nothing audited"


def test_a_body_that_reads_nothing_has_no_read_audited(home, ring):
    before = len(home.audit.entries())
    with Gate(home).open(READ_TEST, None, None, permit(ring)) as cohort:
        cohort.read_nothing()
    assert new_entries(home, before) == []
    with Gate(home).open(READ_TEST, None, None, permit(ring)) as cohort:
        cohort.read(3)
        with pytest.raises(RuntimeError, match="audited"):
            cohort.read_nothing()
    assert [e.details["records"] for e in new_entries(home, before)] == [3]
