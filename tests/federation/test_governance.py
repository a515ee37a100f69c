"""Refusals at the node: each one audited, no data read, ledger unchanged.

Real DuckDB files, real permits signed with the portal's key ring class, the real
revocation puller against a real HTTP server; the governed train task is the one
the ClientApp runs.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from access_control.permits import PermitKeyRing
from federation.apps.tasks import (
    NodeContext,
    audit_task,
    calibrate_task,
    evaluate_task,
    train_task,
)
from federation.launch.fab import fab_hash
from federation.launch.params import RunParams
from federation.node.consent import RegimeConsentFilter
from federation.node.home import NodeHome, node_session
from federation.node.ledger import PrivacyLedger
from federation.node.portal_client import PortalClient
from federation.node.refusal import Refusal
from federation.node.revocations import RevocationList, fetch_revoked
from tre.core.schemas import ConsentRegime, Purpose

from .helpers import Portal, claims, make_home, populate, run_ticket, tickets_for

pytestmark = pytest.mark.integration

DATASET = "pneu"


@pytest.fixture(scope="module")
def portal() -> Iterator[Portal]:
    p = Portal()
    yield p
    p.close()


RING = PermitKeyRing.load_or_create(Path(tempfile.mkdtemp()) / "permit-keys.json")


@pytest.fixture(scope="module")
def ring() -> PermitKeyRing:
    """The portal's key ring: it signs the module's permits and the nodes' run tickets."""
    return RING


@pytest.fixture
def home(tmp_path: Path, ring: PermitKeyRing, portal: Portal) -> Path:
    h = make_home(tmp_path, "hospital-a", ring, portal=portal.url)
    populate(h, DATASET, 0, 3, limit=300)
    PrivacyLedger(h.db, h.audit, actor="operator").set_budget(DATASET, 6.0)
    h.db.close()
    return h.path


def state(path: Path) -> tuple[dict, list[str], int]:
    """(ledger rows, audit actions, number of data.read entries)."""
    with node_session(path) as h:
        ledger = PrivacyLedger(h.db, h.audit, actor="t").snapshot()
        actions = [e.action for e in h.audit.entries()]
    return ledger, actions, actions.count("data.read")


def run(path: Path, token: str, *, app_hash: str | None = None, run_id: str = "run-1",
        rounds: int = 1, tickets: object = "portal", **kw: object) -> dict:
    """The governed train task; `tickets`: the run-ticket source ("portal": the portal's
    ticket for this permit; None: fetched over HTTP from the node's portal)."""
    ctx = NodeContext(home=path, run_id=run_id, app_hash=app_hash or fab_hash(),
                      run_tickets=tickets_for(RING, token) if tickets == "portal"
                      else tickets)
    return train_task(ctx, RunParams(permit=token, rounds=rounds, batch_size=64, **kw),
                      server_round=1, weights=None).metrics


def assert_refused(path: Path, token: str, code: str, **kw: object) -> Refusal:
    before_ledger, before_actions, _ = state(path)
    with pytest.raises(Refusal) as err:
        run(path, token, **kw)
    assert err.value.code == code, err.value
    after_ledger, after_actions, reads = state(path)
    assert after_ledger == before_ledger, "a refusal changed the ledger"
    assert reads == 0, "a refused run read data"
    new = after_actions[len(before_actions):]
    assert new == ["federation.refused"], new
    return err.value


def test_accepted_permit_trains_and_charges(home: Path, ring: PermitKeyRing) -> None:
    token = ring.sign(claims([("hospital-a", DATASET)], eps=3.0))
    metrics = run(home, token)
    assert 0 < metrics["epsilon"] <= 3.0
    ledger, actions, reads = state(home)
    assert reads == 1
    assert actions[-4:] == ["privacy.reserve", "privacy.charge", "data.read", "privacy.release"]
    (charge,) = ledger["privacy_charge"]
    assert charge[7] == pytest.approx(metrics["epsilon"])  # epsilon_run column


def test_forged_signature(home: Path, ring: PermitKeyRing, tmp_path: Path) -> None:
    forger = PermitKeyRing.load_or_create(tmp_path / "forger.json")
    forger.active_kid = ring.active_kid  # claims the portal's key id
    forger._keys[ring.active_kid] = forger._keys.popitem()[1]
    token = forger.sign(claims([("hospital-a", DATASET)]))
    assert_refused(home, token, "permit-invalid")


def test_tampered_claims(home: Path, ring: PermitKeyRing) -> None:
    import base64

    token = ring.sign(claims([("hospital-a", DATASET)], eps=1.0))
    head, payload, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=="))
    data["datasets"][0]["epsilon_cap"] = 50.0
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    assert_refused(home, f"{head}.{forged}.{sig}", "permit-invalid")


def test_expired(home: Path, ring: PermitKeyRing) -> None:
    now = int(time.time())
    token = ring.sign(claims([("hospital-a", DATASET)], nbf=now - 7200, exp=now - 3600))
    assert_refused(home, token, "permit-expired")


def test_not_yet_valid(home: Path, ring: PermitKeyRing) -> None:
    now = int(time.time())
    token = ring.sign(claims([("hospital-a", DATASET)], nbf=now + 3600, exp=now + 7200))
    assert_refused(home, token, "permit-not-yet-valid")


def test_revoked(home: Path, ring: PermitKeyRing, portal: Portal) -> None:
    c = claims([("hospital-a", DATASET)])
    portal.revoked = [c.permit_id]
    try:
        assert_refused(home, ring.sign(c), "permit-revoked")
    finally:
        portal.revoked = []


def test_revocation_cache_fallback(tmp_path: Path, portal: Portal) -> None:
    cache = tmp_path / "revoked.json"
    portal.revoked = ["pmt_x"]
    try:
        live = fetch_revoked(PortalClient(portal.url), cache)
    finally:
        portal.revoked = []
    assert live.source == "portal" and "pmt_x" in live.revoked
    away = PortalClient("http://127.0.0.1:9")
    cached = fetch_revoked(away, cache, timeout=0.5)
    assert cached.source == "cache" and "pmt_x" in cached.revoked
    with pytest.raises(Refusal) as err:
        fetch_revoked(away, cache, timeout=0.5, max_age_s=0)
    assert err.value.code == "revocation-unknown"


def test_unreachable_portal_without_cache_refuses(tmp_path: Path, ring: PermitKeyRing) -> None:
    h = make_home(tmp_path, "hospital-a", ring, portal="http://127.0.0.1:9")
    populate(h, DATASET, 0, 3, limit=50)
    PrivacyLedger(h.db, h.audit, actor="operator").set_budget(DATASET, 6.0)
    h.db.close()
    assert_refused(h.path, ring.sign(claims([("hospital-a", DATASET)])), "revocation-unknown")


def test_other_hospital(home: Path, ring: PermitKeyRing) -> None:
    token = ring.sign(claims([("hospital-b", DATASET)]))
    assert_refused(home, token, "wrong-hospital")


def test_dataset_not_held(home: Path, ring: PermitKeyRing) -> None:
    token = ring.sign(claims([("hospital-a", "other-dataset")]))
    assert_refused(home, token, "unknown-dataset")


def test_wrong_app_hash(home: Path, ring: PermitKeyRing) -> None:
    token = ring.sign(claims([("hospital-a", DATASET)], app_hash="0" * 64))
    assert_refused(home, token, "wrong-app")
    good = ring.sign(claims([("hospital-a", DATASET)]))
    assert_refused(home, good, "wrong-app", app_hash="f" * 64)


def test_epsilon_above_remaining_budget(home: Path, ring: PermitKeyRing) -> None:
    token = ring.sign(claims([("hospital-a", DATASET)], eps=8.0))  # budget is 6
    refusal = assert_refused(home, token, "budget")
    assert "remaining budget" in refusal.reason


def test_epsilon_above_permit_cap(home: Path, ring: PermitKeyRing) -> None:
    token = ring.sign(claims([("hospital-a", DATASET)], eps=2.0))
    assert_refused(home, token, "above-permit-cap", target_epsilon=3.0)


def test_no_budget_policy(tmp_path: Path, ring: PermitKeyRing, portal: Portal) -> None:
    h = make_home(tmp_path, "hospital-a", ring, portal=portal.url)
    populate(h, DATASET, 0, 3, limit=50)
    h.db.close()
    refusal = assert_refused(h.path, ring.sign(claims([("hospital-a", DATASET)])), "budget")
    assert "tre node budget set" in refusal.reason


def test_opt_in_without_consent_snapshot_uses_nobody(tmp_path: Path, ring: PermitKeyRing,
                                                     portal: Portal) -> None:
    h = make_home(tmp_path, "hospital-a", ring, portal=portal.url)
    populate(h, DATASET, 0, 3, limit=50, regime="opt-in")
    PrivacyLedger(h.db, h.audit, actor="operator").set_budget(DATASET, 6.0)
    h.db.close()
    assert_refused(h.path, ring.sign(claims([("hospital-a", DATASET)])), "no-consented-records")


def test_regime_filter() -> None:
    f = RegimeConsentFilter()
    out = f.filter(dataset_id="d", regime=ConsentRegime.OPT_OUT, purpose=Purpose.AI_TRAINING,
                   pseudonyms=["a", "b"])
    assert out.allowed == ["a", "b"] and out.excluded == 0
    out = f.filter(dataset_id="d", regime=ConsentRegime.OPT_IN, purpose=Purpose.AI_TRAINING,
                   pseudonyms=["a", "b"])
    assert out.allowed == [] and out.excluded == 2


def test_round_beyond_plan_is_refused_and_released(home: Path, ring: PermitKeyRing) -> None:
    token = ring.sign(claims([("hospital-a", DATASET)], eps=2.0))
    ctx = NodeContext(home=home, run_id="run-stop", app_hash=fab_hash(),
                      run_tickets=tickets_for(ring, token))
    p = RunParams(permit=token, rounds=2, batch_size=64)
    w = None
    for rnd in (1, 2):
        out = train_task(ctx, p, server_round=rnd, weights=w)
        w = out.weights
        assert out.metrics["epsilon"] <= 2.0
    with pytest.raises(Refusal) as err:  # the server asks for a round the plan does not hold
        train_task(ctx, p, server_round=3, weights=w)
    assert err.value.code == "budget-exhausted"
    ledger, _, reads = state(home)
    assert reads == 2 and len(ledger["privacy_charge"]) == 2


def test_evaluations_the_audit_and_calibration_answer_only_the_runs_own_weights_once(
        home: Path, ring: PermitKeyRing) -> None:
    """A ServerApp may ask each node for one evaluation per round it trained, one
    membership audit and one threshold calibration, on the weights the run produced;
    anything more is refused, audited, and reads nothing."""
    token = ring.sign(claims([("hospital-a", DATASET)], eps=3.0))
    ctx = NodeContext(home=home, run_id="run-eval", app_hash=fab_hash(),
                      run_tickets=tickets_for(ring, token))
    p = RunParams(permit=token, rounds=2, batch_size=64)

    def refused(code: str, task, **kw) -> None:
        _, before, reads_before = state(home)
        with pytest.raises(Refusal) as err:
            task(ctx, p, **kw)
        assert err.value.code == code, err.value
        _, after, reads = state(home)
        assert after[len(before):] == ["federation.refused"] and reads == reads_before

    first = train_task(ctx, p, server_round=1, weights=None).weights
    forged = {name: v + 0.5 for name, v in first.items()}
    refused("weights-not-of-this-run", evaluate_task, server_round=2, weights=first)
    assert evaluate_task(ctx, p, server_round=1, weights=first)["num-examples"] > 0
    refused("queries-exhausted", evaluate_task, server_round=1, weights=first)
    # the ServerApp sends on other weights than those it had evaluated
    refused("weights-not-of-this-run", train_task, server_round=2, weights=forged)
    second = train_task(ctx, p, server_round=2, weights=first).weights
    evaluate_task(ctx, p, server_round=2, weights=second)
    refused("weights-not-of-this-run", audit_task, weights=forged)
    assert audit_task(ctx, p, weights=second)["mia-records"] > 20
    with node_session(home) as h, h.db.reader() as con:  # non-members: val only
        audit_read = [e.details for e in h.audit.entries() if e.action == "data.read"][-1]
        held = dict(con.execute(
            "SELECT split, count(*) FROM imaging_study WHERE dataset_id = ? GROUP BY split",
            [DATASET]).fetchall())
    assert audit_read["split"] == "train+val"
    assert audit_read["records"] == held["train"] + held["val"] < sum(held.values())
    refused("queries-exhausted", audit_task, weights=second)
    refused("weights-not-of-this-run", calibrate_task, weights=first)
    rates = calibrate_task(ctx, p, weights=second)  # rates rounded like statistics
    with node_session(home) as h:
        assert [e.details for e in h.audit.entries() if e.action == "data.read"][-1][
            "split"] == "val+test"
    for split in ("", "test-"):
        assert rates[f"{split}num-examples"] % 5 == 0 and 0 < rates[f"{split}prevalence"] < 1
        assert all(v == round(v, 3) for v in rates[f"{split}tpr"] + rates[f"{split}tnr"])
    refused("queries-exhausted", calibrate_task, weights=second)
    ledger, actions, _ = state(home)
    kinds = sorted((row[4], row[5]) for row in ledger["run_query"])
    assert kinds == [("audit", 0), ("calibrate", 0), ("evaluate", 1), ("evaluate", 2),
                     ("train-input", 2)]
    assert actions.count("query.answer") == 5


def test_concurrent_runs_race_for_last_budget(home: Path, ring: PermitKeyRing) -> None:
    """Two runs, each asking for 4 of the 6 ε left, start at once in two threads sharing the
    node store: exactly one reserves and trains, the other is refused before reading."""
    tokens = [ring.sign(claims([("hospital-a", DATASET)], eps=4.0)) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: dict[int, object] = {}

    with node_session(home) as h:
        ledger = PrivacyLedger(h.db, h.audit, actor="t")
        from federation.node.authorisation import RunPermit
        from federation.node.gate import Action, Gate
        from federation.training.dp import plan_dp

        plan = plan_dp(num_examples=300, batch_size=64, local_epochs=1, rounds=1,
                       target_epsilon=4.0, delta=1e-5)

        class Race:
            """Reserve the plan once both runs are past every other check."""

            def admit(self, auth):  # noqa: ANN001, ANN202
                pass

            def spend(self, budget, cohort):  # noqa: ANN001, ANN202
                barrier.wait()
                return budget.reserve(plan)

            def settle(self, budget, res):  # noqa: ANN001, ANN202
                pass

        def attempt(i: int) -> None:
            permit = RunPermit(tokens[i], fab_hash(), f"race-{i}",
                               revocations=lambda: RevocationList(frozenset(), "test", 0),
                               run_tickets=tickets_for(ring, tokens[i]))
            action = Action("race", "train", lambda home, grant: {}, spend=Race())
            try:
                with Gate(h).open(action, None, None, permit) as cohort:
                    results[i] = cohort.reservation
            except Refusal as r:
                results[i] = r

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wins = [r for r in results.values() if not isinstance(r, Refusal)]
        losses = [r for r in results.values() if isinstance(r, Refusal)]
        assert len(wins) == 1 and len(losses) == 1
        assert losses[0].code == "budget"
        assert len(ledger.snapshot()["privacy_reservation"]) == 1
        assert ledger.status(DATASET).epsilon_remaining == pytest.approx(2.0)


def test_concurrent_processes_race_for_last_budget(home: Path, ring: PermitKeyRing) -> None:
    """The same race between two OS processes (as two Flower runs' ClientApps would be):
    DuckDB's file lock serialises them; exactly one trains."""
    import multiprocessing as mp

    tokens = [ring.sign(claims([("hospital-a", DATASET)], eps=4.0)) for _ in range(2)]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_race_worker,
                         args=(str(home), tok, f"prun-{i}", q, run_ticket(ring, tok, f"prun-{i}")))
             for i, tok in enumerate(tokens)]
    for p in procs:
        p.start()
    outcomes = [q.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
    assert sorted(o[0] for o in outcomes) == ["ok", "refused:budget"], outcomes
    ledger, _, reads = state(home)
    assert reads == 1 and len(ledger["privacy_reservation"]) == 1


def _race_worker(home: str, token: str, run_id: str, q: object, ticket: str) -> None:
    try:
        ctx = NodeContext(home=Path(home), run_id=run_id, app_hash=fab_hash(),
                          revocations=lambda: RevocationList(frozenset(), "test", 0),
                          run_tickets=lambda _run: ticket)
        train_task(ctx, RunParams(permit=token, rounds=1, batch_size=64), server_round=1,
                   weights=None)
        q.put(("ok", run_id))  # type: ignore[attr-defined]
    except Refusal as r:
        q.put((f"refused:{r.code}", run_id))  # type: ignore[attr-defined]


def test_run_ticket_must_bind_this_run_permit_and_hospital(home: Path, ring: PermitKeyRing,
                                                          tmp_path: Path) -> None:
    """A permit is a bearer token every node sees in run configs; without the portal's
    ticket for this very run, permit and hospital it buys nothing."""
    token = ring.sign(claims([("hospital-a", DATASET)]))
    other = ring.sign(claims([("hospital-a", DATASET)]))
    stranger = PermitKeyRing.load_or_create(tmp_path / "stranger.json")
    cases = {
        "another run": (lambda r: run_ticket(ring, token, "flwr-999"), "run-ticket-mismatch"),
        "another permit": (lambda r: run_ticket(ring, other, r), "run-ticket-mismatch"),
        "another hospital": (lambda r: run_ticket(ring, token, r, ["hospital-b"]),
                             "run-ticket-mismatch"),
        "a foreign key": (lambda r: run_ticket(stranger, token, r), "run-ticket-invalid"),
        "the permit itself": (lambda r: token, "run-ticket-invalid"),
    }
    for name, (source, code) in cases.items():
        refusal = assert_refused(home, token, code, tickets=source)
        assert "ticket" in refusal.reason, name


def test_run_ticket_is_fetched_from_the_portal(home: Path, ring: PermitKeyRing, portal: Portal,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Over real HTTP: no ticket at the portal for a Flower run means no run here (after a
    short wait for a run the portal is still recording); with it, the run trains."""
    import federation.node.authorisation as authorisation

    monkeypatch.setattr(authorisation, "RUN_TICKET_WAIT_S", 1.0)
    token = ring.sign(claims([("hospital-a", DATASET)]))
    assert_refused(home, token, "no-run-ticket", tickets=None, run_id="flwr-4242")
    portal.tickets[4243] = run_ticket(ring, token, "flwr-4243")
    assert run(home, token, tickets=None, run_id="flwr-4243")["epsilon"] > 0


def test_refusal_keeps_audit_chain_valid(home: Path, ring: PermitKeyRing) -> None:
    token = ring.sign(claims([("hospital-b", DATASET)]))
    with pytest.raises(Refusal):
        run(home, token)
    h = NodeHome(home)
    assert h.audit.verify().ok
    h.db.close()
