"""Who may use this node's data, checked before anything is read (invariants 2 and 3).

Three credentials open the node's gate (`federation.node.gate`):

* `RunPermit`, for a governed Flower run: the portal's permit verifies with the keys
  pinned at enrolment, is valid now and not revoked, names this hospital and a dataset
  held here, approves the app being run (its FAB hash), and the portal's run ticket
  binds permit, app and hospital to this very Flower run;
* `QueryTicket`, for a feasibility count: the portal's ticket for exactly this cohort,
  purpose and hospital, not answered here before, for a researcher within this node's
  daily query budget;
* `OperatorUse`, for the node operator's own synthesis or cohort count.

Each check raises `Refusal`; the gate audits it. This module is node-installed code:
the FAB a researcher's run ships only names it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from access_control.permits import (
    PermitError,
    unverified_claims,
    verify_permit,
    verify_run_ticket,
    verify_ticket,
)
from federation.node import store
from federation.node.home import NodeHome
from federation.node.permit_keys import KeyRefused, keys_for
from federation.node.portal_client import PortalClient, PortalError
from federation.node.refusal import Refusal
from federation.node.revocations import RevocationList, portal_revocations
from tre.core.audit import AuditAction
from tre.core.schemas import (
    CohortFilter,
    FeasibilityTicket,
    PermitClaims,
    PermitDataset,
    Purpose,
)

RUN_TICKET_WAIT_S = 20.0
_run_tickets: dict[tuple[str, str], str] = {}


def portal_run_ticket(home: NodeHome, run_id: str, *, wait_s: float | None = None) -> str:
    """The portal's ticket for this node's run `flwr-<id>`, fetched once per run.

    The portal records the Flower run id only after the SuperLink accepted the run, so
    a first message may arrive a moment before its ticket exists: a 404 is retried for
    `wait_s`. Anything else (no such run at the portal, portal unreachable) refuses."""
    key = (str(home.path), run_id)
    if key in _run_tickets:
        return _run_tickets[key]
    try:
        flower_id = int(run_id.removeprefix("flwr-"))
    except ValueError:
        raise Refusal("no-run-ticket", f"run {run_id!r} is not a Flower run") from None
    client = PortalClient.for_home(home)
    deadline = time.monotonic() + (RUN_TICKET_WAIT_S if wait_s is None else wait_s)
    while True:
        try:
            token = client.run_ticket(flower_id)
            break
        except PortalError as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise Refusal("no-run-ticket", f"the portal has no ticket for run {run_id}: "
                              f"{exc}") from exc
            time.sleep(0.5)
    if len(_run_tickets) > 256:
        _run_tickets.clear()
    _run_tickets[key] = token
    return token


@dataclass(frozen=True)
class Authorisation:
    """A verified permit for one dataset here, in one run."""

    claims: PermitClaims
    dataset: PermitDataset
    run_id: str
    app_hash: str
    revocation_source: str

    @property
    def purpose(self) -> Purpose:
        return self.claims.purpose

    @property
    def dataset_id(self) -> str:
        return self.dataset.dataset_id

    def summary(self) -> dict[str, Any]:
        return {
            "permit_id": self.claims.permit_id, "run_id": self.run_id,
            "dataset_id": self.dataset.dataset_id, "purpose": str(self.claims.purpose),
            "app_hash": self.app_hash, "revocations": self.revocation_source,
        }

    def read_entry(self, *, split: str, records: int, excluded: int, why: str
                   ) -> tuple[AuditAction, str, str, dict[str, Any]]:
        """How the gate audits a read under this permit: action, object, details."""
        return AuditAction.DATA_READ, "dataset", self.dataset_id, {
            **self.summary(), "split": split, "records": records,
            "excluded_by_consent": excluded, "for": why}


@dataclass(frozen=True)
class TicketAuthorisation:
    """A verified feasibility ticket for one cohort count here."""

    ticket: FeasibilityTicket
    cohort: CohortFilter
    run_id: str
    purpose: Purpose
    dataset_id: str | None
    """The cohort's dataset; None: every dataset here that matches it."""

    def read_entry(self, *, split: str, records: int, excluded: int, why: str
                   ) -> tuple[AuditAction, str, str, dict[str, Any]]:
        """A feasibility count is audited as the query (its ticket, its researcher: what
        the ticket-reuse and query-budget checks count), not with exact record counts."""
        return AuditAction.QUERY_FEASIBILITY, "cohort", self.cohort.digest()[:16], {
            "run_id": self.run_id, "cohort": self.cohort.model_dump(mode="json"),
            "purpose": Purpose(self.purpose).value,
            "ticket_id": self.ticket.ticket_id, "researcher": self.ticket.sub}


@dataclass(frozen=True)
class OperatorAuthorisation:
    """The node operator's own use of the data held here: one dataset, or a cohort count."""

    dataset_id: str | None
    """None: a count over every dataset here that matches `cohort`."""
    purpose: Purpose
    run_id: str
    cohort: CohortFilter | None = None

    def read_entry(self, *, split: str, records: int, excluded: int, why: str
                   ) -> tuple[AuditAction, str, str, dict[str, Any]]:
        """A count is audited as the query asked, without its answer (as a feasibility
        count is); the use of a dataset as its read, with the records read."""
        if self.cohort is not None:
            return AuditAction.QUERY_COHORT, "cohort", self.cohort.digest()[:16], {
                "cohort": self.cohort.model_dump(mode="json"), "purpose": self.purpose.value}
        return AuditAction.DATA_READ, "dataset", str(self.dataset_id), {
            "run_id": self.run_id, "dataset_id": self.dataset_id,
            "purpose": self.purpose.value, "by": "node operator", "split": split,
            "records": records, "excluded_by_consent": excluded, "for": why}


@dataclass(frozen=True)
class RunPermit:
    """The credential of a governed run: the permit, the app being run, the Flower run."""

    token: str
    app_hash: str | None
    run_id: str
    revocations: Callable[[], RevocationList] | None = None
    run_tickets: Callable[[str], str] | None = None
    """Source of the portal's run ticket for a run id (default: the node's portal)."""
    clock: Callable[[], float] = time.time
    refused_action: ClassVar[AuditAction] = AuditAction.FEDERATION_REFUSED

    def refusal_details(self, grant: Authorisation | None) -> dict[str, Any]:
        """The permit a refusal concerns: verified, or as the token *claims* it (for the
        audit trail only) when the permit itself was refused."""
        if grant is not None:
            return {"permit_id": grant.claims.permit_id}
        try:
            return {"permit_id": str(unverified_claims(self.token).get("permit_id"))}
        except Exception:  # noqa: BLE001 - garbage tokens are audited without an id
            return {"permit_id": None}

    def authorise(self, home: NodeHome, dataset_id: str | None,
                  purpose: Purpose | None) -> Authorisation:
        """Permit signature, validity, revocation, scope, app hash and run ticket; a
        `purpose` other than None must be the permit's."""
        revs = (self.revocations or (lambda: portal_revocations(home)))()
        claims = self._verify(home, revs)
        if claims.permit_id in revs.revoked:
            raise Refusal("permit-revoked", f"permit {claims.permit_id} has been revoked")
        hospital = home.config.hospital_id
        mine = claims.dataset_for(hospital)
        if not mine:
            raise Refusal("wrong-hospital",
                          f"permit {claims.permit_id} names no dataset of hospital {hospital!r}")
        if dataset_id is not None:
            mine = [d for d in mine if d.dataset_id == dataset_id]
            if not mine:
                raise Refusal("dataset-not-in-permit",
                              f"dataset {dataset_id!r} is not in permit {claims.permit_id}")
        if len(mine) > 1:
            raise Refusal("dataset-ambiguous", f"permit {claims.permit_id} names {len(mine)} "
                          "datasets here; the run must pick one")
        if not self.app_hash or self.app_hash != claims.app_hash:
            raise Refusal(
                "wrong-app",
                f"the app being run (hash {self.app_hash or 'unknown'}) is not the app approved "
                f"by permit {claims.permit_id} (hash {claims.app_hash})")
        self._check_run_ticket(home, claims, revs)
        if purpose is not None and Purpose(purpose) != Purpose(claims.purpose):
            raise Refusal("wrong-purpose",
                          f"permit {claims.permit_id} is for {claims.purpose}, not {purpose}")
        store.dataset_regime(home, mine[0].dataset_id)  # held here, or `unknown-dataset`
        return Authorisation(claims, mine[0], self.run_id, self.app_hash, revs.source)

    def _verify(self, home: NodeHome, revs: RevocationList) -> PermitClaims:
        try:
            jwks = keys_for(home, self.token, retired=revs.retired_keys)
        except KeyRefused as exc:
            raise Refusal(exc.code, str(exc)) from exc
        except PermitError as exc:
            raise Refusal("permit-invalid", str(exc)) from exc
        try:
            return verify_permit(self.token, jwks, now=self.clock())
        except PermitError as exc:
            msg = str(exc)
            code = ("permit-expired" if "expired" in msg else
                    "permit-not-yet-valid" if "not valid yet" in msg else "permit-invalid")
            raise Refusal(code, msg) from exc

    def _check_run_ticket(self, home: NodeHome, claims: PermitClaims,
                          revs: RevocationList) -> None:
        token = (self.run_tickets or (lambda r: portal_run_ticket(home, r)))(self.run_id)
        try:
            jwks = keys_for(home, token, retired=revs.retired_keys)
            ticket = verify_run_ticket(token, jwks, now=self.clock())
        except KeyRefused as exc:
            raise Refusal("run-ticket-invalid", f"the run ticket's key: {exc}") from exc
        except PermitError as exc:
            raise Refusal("run-ticket-invalid", str(exc)) from exc
        hospital = home.config.hospital_id
        wrong = [what for what, ok in (
            ("run", ticket.run == self.run_id), ("permit", ticket.permit_id == claims.permit_id),
            ("app", ticket.app_hash == self.app_hash), ("hospital", hospital in ticket.hospitals),
        ) if not ok]
        if wrong:
            raise Refusal("run-ticket-mismatch", f"run ticket {ticket.ticket_id} was issued "
                          f"for another {' and '.join(wrong)} than run {self.run_id} of permit "
                          f"{claims.permit_id} at {hospital}")


@dataclass(frozen=True)
class QueryTicket:
    """The credential of a feasibility count: the portal's ticket for this cohort, in
    this node's own feasibility app."""

    token: str
    cohort: CohortFilter
    run_id: str
    app_hash: str | None
    """The app being run (its FAB hash)."""
    approved_app_hash: str
    """This node's own feasibility app: the only one that may count here."""
    now: float | None = None
    refused_action: ClassVar[AuditAction] = AuditAction.QUERY_REFUSED

    def refusal_details(self, grant: TicketAuthorisation | None) -> dict[str, Any]:
        return {}

    def authorise(self, home: NodeHome, dataset_id: str | None,
                  purpose: Purpose | None) -> TicketAuthorisation:
        """The portal's ticket for exactly this query (cohort, its dataset, `purpose`: None
        for the ticket's) at this hospital, not used here before (a replay by whoever saw
        the run config on the SuperLink gets nothing), for a researcher within this
        node's daily query budget."""
        if not self.app_hash or self.app_hash != self.approved_app_hash:
            raise Refusal("wrong-app", f"the app being run (hash {self.app_hash or 'unknown'}) "
                          "is not this node's feasibility app")
        if not self.token:
            raise Refusal("no-ticket", "the query carries no feasibility ticket from the portal")
        try:
            ticket = verify_ticket(self.token, keys_for(home, self.token), now=self.now)
        except KeyRefused as exc:
            raise Refusal("ticket-invalid", f"the feasibility ticket's key: {exc}") from exc
        except PermitError as exc:
            raise Refusal("ticket-invalid", str(exc)) from exc
        hospital = home.config.hospital_id
        if hospital not in ticket.hospitals:
            raise Refusal("wrong-hospital",
                          f"feasibility ticket {ticket.ticket_id} does not name {hospital!r}")
        if (ticket.cohort_digest != self.cohort.digest() or dataset_id != self.cohort.dataset_id
                or purpose not in (None, ticket.purpose)):
            raise Refusal("ticket-mismatch", f"the cohort or purpose asked is not the one "
                          f"feasibility ticket {ticket.ticket_id} was issued for")
        used = store.ticket_answered(home, ticket.ticket_id)
        if used is not None:
            raise Refusal("ticket-used", f"feasibility ticket {ticket.ticket_id} was already "
                          f"answered here (audit row {used})")
        since = (datetime.fromtimestamp(time.time() if self.now is None else self.now, UTC)
                 - timedelta(days=1)).isoformat(timespec="microseconds")
        asked = store.feasibility_queries_since(home, ticket.sub, since)
        limit = home.config.feasibility_queries_per_day
        if asked >= limit:
            raise Refusal("query-budget", f"this researcher has asked {asked} feasibility "
                          f"queries here in the last 24 h (limit {limit}); try again tomorrow "
                          "or ask the hospital to review the limit")
        return TicketAuthorisation(ticket, self.cohort, self.run_id, ticket.purpose,
                                   self.cohort.dataset_id)


@dataclass(frozen=True)
class OperatorUse:
    """The node operator's own use of the data (`tre node synthesize` of one dataset,
    `tre node query` counting a `cohort`): no permit, and the purpose is the node's,
    but consent, disclosure control and the audit apply all the same."""

    run_id: str
    cohort: CohortFilter | None = None

    @property
    def refused_action(self) -> AuditAction:
        return AuditAction.SYNTHETIC_REFUSED if self.cohort is None else AuditAction.QUERY_REFUSED

    def refusal_details(self, grant: OperatorAuthorisation | None) -> dict[str, Any]:
        return {} if self.cohort is None else {"cohort": self.cohort.model_dump(mode="json")}

    def authorise(self, home: NodeHome, dataset_id: str | None,
                  purpose: Purpose | None) -> OperatorAuthorisation:
        """The dataset is held here (Refusal `unknown-dataset` otherwise); only a count
        may name none (every dataset here)."""
        if purpose is None or (dataset_id is None and self.cohort is None):
            raise Refusal("no-dataset", "the node operator's use names one dataset and "
                          "its purpose")
        if dataset_id is not None:
            store.dataset_regime(home, dataset_id)
        return OperatorAuthorisation(dataset_id, Purpose(purpose), self.run_id, self.cohort)
