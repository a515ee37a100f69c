"""The node's one gate: every use of its data goes through `Gate.open` (invariants 2-4).

    with gate.open(action, purpose, dataset, credential) as cohort:
        ...read cohort.pseudonyms of cohort.dataset, then cohort.read(records)...

Checks, in this order, before the body runs; the first that fails refuses:

1. the credential (`federation.node.authorisation`): a permit with the portal's run
   ticket for this run (revocation, scope: this hospital and a dataset held here, the
   app's hash), a feasibility ticket, or the node operator's own use;
2. the action's own admission (e.g. the ε asked is within the permit's cap) and its
   metered query against the run's weights (`PrivacyLedger.record_query`);
3. the consent filter, which pulls a fresh consent snapshot (or refuses on a stale
   one) and keeps only subjects whose consent covers the purpose;
4. the disclosure threshold: below k consented records the action is refused or its
   answer withheld, as the action says;
5. the action's spend: ε reserved and charged in the ledger before any record is read.

The gate audits the read when the body completes, or when it fails after recording
what it read (`cohort.read`): a crash after the read never leaves it unaudited. A body
that decides to read nothing (`cohort.read_nothing`) has no read audited. The gate
audits every `Refusal` raised by the checks, the spend or the body: this is the one
place where refusals are audited, exactly once each. After a permit run's read it tells
the portal whom the run used, as membership tags (`federation.node.participation`), so
each person can see the runs on their records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from federation.node.authorisation import (
    Authorisation,
    OperatorAuthorisation,
    OperatorUse,
    QueryTicket,
    RunPermit,
    TicketAuthorisation,
)
from federation.node.consent import ConsentDecision, ConsentFilter, RegimeConsentFilter
from federation.node.home import NodeHome
from federation.node.ledger import BudgetError, PrivacyLedger, QueryRefused, Reservation
from federation.node.participation import report as report_members
from federation.node.refusal import Refusal
from federation.node.store import dataset_regime
from tre.core.audit import AuditAction
from tre.core.disclosure import DISCLOSURE_KEY_PURPOSE, Disclosed, disclosed_count, is_suppressed
from tre.core.schemas import Purpose

Credential = RunPermit | QueryTicket | OperatorUse
Grant = Authorisation | TicketAuthorisation | OperatorAuthorisation
Candidates = Callable[[NodeHome, Grant], dict[str, list[str]]]
"""The subjects an action may touch, per dataset, before consent decides."""


class BelowThreshold(StrEnum):
    """What an action does when fewer than k consented records remain."""

    REFUSE = "refuse"  # nothing it returns could leave the node
    WITHHOLD = "withhold"  # it answers, with its figures withheld
    PROCEED = "proceed"  # what leaves is disclosed otherwise (cells, a privacy gate)


@dataclass(frozen=True)
class Query:
    """A question a run asks of its own weights, metered before anything is read."""

    kind: str
    server_round: int
    weights_sha256: str


class Budget:
    """The ledger as one authorised run may use it; failures are Refusals the gate audits."""

    def __init__(self, ledger: PrivacyLedger, auth: Authorisation) -> None:
        self.ledger = ledger
        self.auth = auth

    def reservation(self) -> Reservation | None:
        """The run's reservation on this dataset, if one was made."""
        a = self.auth
        return self.ledger.reservation(a.run_id, a.claims.permit_id, a.dataset_id)

    def reserve(self, plan: Any) -> Reservation:
        """Reserve the run's planned ε (a DPPlan) against the dataset total and permit cap."""
        a = self.auth
        try:
            return self.ledger.reserve(
                run_id=a.run_id, permit_id=a.claims.permit_id, dataset_id=a.dataset_id,
                epsilon=plan.target_epsilon, delta=plan.delta,
                permit_epsilon_cap=a.dataset.epsilon_cap, accountant=plan.accountant,
                noise_multiplier=plan.noise_multiplier, sample_rate=plan.sample_rate,
                steps_per_round=plan.steps_per_round, rounds=plan.rounds,
                max_grad_norm=plan.max_grad_norm,
            )
        except BudgetError as exc:
            raise Refusal("budget", str(exc)) from exc

    def history(self, res: Reservation) -> list[tuple[float, float, int]]:
        return self.ledger.history(res.reservation_id)

    def charge(self, res: Reservation, *, server_round: int, steps: int) -> float:
        """Charge one round's steps before its data is read; returns the run's ε after it.
        Refuses (and releases what is left) when the round would pass the reservation."""
        from federation.training.dp import epsilon_of

        eps = epsilon_of(res.accountant, [*self.history(res),
                                          (res.noise_multiplier, res.sample_rate, steps)],
                         res.delta)
        try:
            self.ledger.charge(res, round=server_round, steps=steps, epsilon_run=eps,
                               noise_multiplier=res.noise_multiplier,
                               sample_rate=res.sample_rate)
        except BudgetError as exc:
            if self.ledger.is_open(res.reservation_id):
                self.ledger.release(res, reason=f"stopped before round {server_round}: {exc}")
            raise Refusal("budget-exhausted", str(exc)) from exc
        return eps

    def release(self, res: Reservation, *, reason: str) -> float:
        return self.ledger.release(res, reason=reason)


class Spend(Protocol):
    """An action's privacy budget: checked on admission, spent before the read, settled
    after it. Its Refusals are audited by the gate like any other."""

    def admit(self, auth: Authorisation) -> None: ...

    def spend(self, budget: Budget, cohort: ConsentedCohort) -> Reservation: ...

    def settle(self, budget: Budget, res: Reservation) -> None: ...


@dataclass(frozen=True)
class Action:
    """What the gate is opened for."""

    name: str
    """Why the data is read, as the audit says it ("train round 2", "evaluate")."""
    split: str
    """The records it reads, as the audit names them ("train", "train+val")."""
    candidates: Candidates
    below_threshold: BelowThreshold = BelowThreshold.PROCEED
    require_records: bool = False
    """Refuse with no consented record at all (instead of answering about nobody)."""
    query: Query | None = None
    spend: Spend | None = None


@dataclass
class ConsentedCohort:
    """What the gate hands the body: the consented subjects, and what was checked."""

    authorisation: Grant
    decisions: dict[str, ConsentDecision]
    shown: Disclosed | None = None
    """The consented count as it may leave the node (for threshold actions)."""
    withheld: bool = False
    """Below the threshold of a withholding action: nothing may be read."""
    reservation: Reservation | None = None
    records: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    unread: bool = False
    """The body read nothing (`read_nothing`): no read is audited."""

    @property
    def dataset(self) -> str | None:
        """The authorised dataset (None: a feasibility count over every matching one)."""
        return self.authorisation.dataset_id

    @property
    def pseudonyms(self) -> list[str]:
        return [p for d in self.decisions.values() for p in d.allowed]

    @property
    def excluded(self) -> int:
        return sum(d.excluded for d in self.decisions.values())

    @property
    def basis(self) -> str:
        return "; ".join(d.basis for d in self.decisions.values())

    def allowed(self, dataset_id: str) -> set[str]:
        return set(self.decisions[dataset_id].allowed)

    def read(self, records: int, **details: Any) -> None:
        """Record how many records the body read (and what the audit should add)."""
        self.records = records
        self.details.update(details)

    def read_nothing(self) -> None:
        """The body decided, from the consented subjects alone, not to read a record
        (e.g. a synthesis whose cohort is unchanged): the gate then audits no read,
        as nothing was read. Only before `read`."""
        if self.records is not None:
            raise RuntimeError("records were read already: that read is audited")
        self.unread = True


@dataclass
class Gate:
    """Every check of one node home before its data is read; see the module docstring."""

    home: NodeHome
    consent_filter: ConsentFilter = field(default_factory=RegimeConsentFilter)

    def __post_init__(self) -> None:
        self.ledger = PrivacyLedger(self.home.db, self.home.audit, actor=self.home.actor)

    def authorise(self, credential: RunPermit, dataset: str | None = None) -> Budget:
        """The credential's checks alone (a run's `close`: nothing is read); the refusal
        is audited. Returns the run's budget."""
        try:
            return Budget(self.ledger, credential.authorise(self.home, dataset, None))
        except Refusal as refusal:
            self._refused(refusal, credential, None, stage="authorise")
            raise

    @contextmanager
    def open(self, action: Action, purpose: Purpose | None, dataset: str | None,
             credential: Credential) -> Iterator[ConsentedCohort]:
        """Check, spend, hand over the consented cohort, audit; see the module docstring.
        `purpose` None: the credential's own."""
        grant: Grant | None = None
        cohort: ConsentedCohort | None = None
        budget: Budget | None = None
        stage = "authorise"
        try:
            grant = credential.authorise(self.home, dataset, purpose)
            if action.spend is not None:
                stage = "admit"
                budget = Budget(self.ledger, self._permit(grant))
                action.spend.admit(budget.auth)
            if action.query is not None:
                stage = action.query.kind
                self._meter(self._permit(grant), action.query)
            stage = "consent"
            cohort = ConsentedCohort(grant, self._consent(action, grant))
            if action.require_records and not cohort.pseudonyms:
                raise Refusal("no-consented-records",
                              f"no record of {cohort.dataset!r} may be used for "
                              f"{grant.purpose} ({cohort.basis})")
            stage = "disclosure"
            self._threshold(action, cohort)
            if action.spend is not None and budget is not None and not cohort.withheld:
                stage = "budget"
                cohort.reservation = action.spend.spend(budget, cohort)
            stage = "read"
            yield cohort
        except Refusal as refusal:
            if cohort is not None and cohort.records is not None:
                self._audit_read(action, cohort)  # it was read before the refusal
            self._refused(refusal, credential, grant, stage=stage)
            raise
        except BaseException:
            if cohort is not None and cohort.records is not None:
                self._audit_read(action, cohort)  # it was read before the body failed
            raise
        if not (cohort.withheld or cohort.unread):
            self._audit_read(action, cohort)
            if isinstance(grant, Authorisation):
                report_members(self.home, grant.run_id, grant.dataset_id, cohort.pseudonyms)
        if action.spend is not None and budget is not None and cohort.reservation is not None:
            action.spend.settle(budget, cohort.reservation)

    # -- the steps ---------------------------------------------------------------------
    @staticmethod
    def _permit(grant: Grant) -> Authorisation:
        if not isinstance(grant, Authorisation):
            raise Refusal("no-permit", "this action spends privacy budget: it needs a permit")
        return grant

    def _meter(self, auth: Authorisation, query: Query) -> None:
        try:
            self.ledger.record_query(
                run_id=auth.run_id, permit_id=auth.claims.permit_id,
                dataset_id=auth.dataset_id, kind=query.kind, round=query.server_round,
                weights_sha256=query.weights_sha256)
        except QueryRefused as exc:
            raise Refusal(exc.code, str(exc)) from exc

    def _consent(self, action: Action, grant: Grant) -> dict[str, ConsentDecision]:
        return {
            ds: self.consent_filter.filter(dataset_id=ds, regime=dataset_regime(self.home, ds),
                                           purpose=grant.purpose, pseudonyms=subjects)
            for ds, subjects in action.candidates(self.home, grant).items()
        }

    def _threshold(self, action: Action, cohort: ConsentedCohort) -> None:
        if action.below_threshold is BelowThreshold.PROCEED:
            return
        k = self.home.config.suppression_k
        cohort.shown = disclosed_count(cohort.pseudonyms, k=k,
                                       secret=self.home.derive_key(DISCLOSURE_KEY_PURPOSE))
        if not is_suppressed(cohort.shown):
            return
        if action.below_threshold is BelowThreshold.WITHHOLD:
            cohort.withheld = True
            return
        raise Refusal("cohort-too-small",
                      f"fewer than {k} records of {cohort.dataset!r} may be used for "
                      f"{cohort.authorisation.purpose}: what {action.name} returns could not "
                      "leave this node")

    # -- the audit ---------------------------------------------------------------------
    def _audit_read(self, action: Action, cohort: ConsentedCohort) -> None:
        records = len(cohort.pseudonyms) if cohort.records is None else cohort.records
        what, object_type, object_id, details = cohort.authorisation.read_entry(
            split=action.split, records=records, excluded=cohort.excluded, why=action.name)
        self._record(what, object_type, object_id, {**details, **cohort.details})

    def _refused(self, refusal: Refusal, credential: Credential, grant: Grant | None, *,
                 stage: str) -> None:
        """Audit a refusal (its own transaction: nothing else is written)."""
        self._record(credential.refused_action, "run", credential.run_id,
                     {"code": refusal.code, "reason": refusal.reason, "stage": stage,
                      **credential.refusal_details(grant)})

    def _record(self, what: AuditAction, object_type: str, object_id: str,
                details: dict[str, Any]) -> None:
        self.home.audit.record(actor=self.home.actor, action=what, object_type=object_type,
                               object_id=object_id, details=details)
