"""Governance at the node (invariants 2 and 3): what must hold before any record is read.

Order of checks, each refusal audited and leaving data and ledger untouched:

1. the permit's signature verifies with the portal key pinned at enrolment;
2. it is valid now (not before `nbf`, not after `exp`) and not revoked (the
   revocation list is pulled from the portal, with a cached copy as fallback);
3. this hospital and the dataset are in the permit, and the dataset is held here;
4. the app being run is the one the permit approves (its FAB hash), and the portal's
   run ticket binds permit, app and hospital to this very Flower run (a permit copied
   into a run the portal did not submit is refused);
5. the consent filter keeps only subjects whose consent covers the purpose;
6. the run's ε is reserved atomically in the ledger, and each round is charged
   before its data is read; a round that would pass the reservation is refused.

Only then is data read, and the read itself is audited. This module is
node-installed code: the FAB a researcher's run ships only names it.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import duckdb

from access_control.permits import PermitError, verify_permit, verify_run_ticket
from federation.node.home import NodeHome
from federation.node.ledger import BudgetError, PrivacyLedger, QueryRefused, Reservation
from federation.node.permit_keys import KeyRefused, keys_for
from federation.node.portal_client import PortalClient, PortalError
from tre.core.audit import AuditAction
from tre.core.schemas import ConsentRegime, PermitClaims, PermitDataset, Purpose

REVOKED_CACHE_FILE = "revoked-permits.json"
DEFAULT_REVOCATION_MAX_AGE_S = 24 * 3600
REVOCATION_TIMEOUT_S = 5.0


class Refusal(Exception):
    """The node refuses to run: `code` is stable (tests, reports), the message is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.reason = message


# -- revocation list -----------------------------------------------------------------------
@dataclass(frozen=True)
class RevocationList:
    revoked: frozenset[str]
    source: str  # "portal" or "cache"
    fetched_at: float
    retired_keys: frozenset[str] = frozenset()  # permit keys whose signatures are refused


def fetch_revoked(
    client: PortalClient,
    cache_path: Path,
    *,
    timeout: float = REVOCATION_TIMEOUT_S,
    max_age_s: float = DEFAULT_REVOCATION_MAX_AGE_S,
) -> RevocationList:
    """The portal's revoked permits and retired permit keys (`client.revoked_permits`); on
    success refresh the cache file, otherwise fall back to the cache if it is younger than
    `max_age_s`. With neither, raise Refusal: a node that cannot know whether a permit was
    revoked does not run it."""
    url = f"{client.portal_url}/v1/permits/revoked"
    problem = ""
    try:
        body = client.revoked_permits(timeout=timeout)
        ids, retired = body["revoked"], body["retired_keys"]
        now = time.time()
        tmp = cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"revoked": ids, "retired_keys": retired, "fetched_at": now}))
        os.replace(tmp, cache_path)
        return RevocationList(frozenset(ids), "portal", now, frozenset(retired))
    except PortalError as exc:
        problem = str(exc)
    if cache_path.exists():
        data = json.loads(cache_path.read_text())
        age = time.time() - float(data["fetched_at"])
        if age <= max_age_s:
            return RevocationList(frozenset(data["revoked"]), "cache", float(data["fetched_at"]),
                                  frozenset(data.get("retired_keys", [])))
        problem += f"; cached list is {age:.0f}s old (max {max_age_s:.0f}s)"
    raise Refusal(
        "revocation-unknown",
        f"cannot check revocations: portal {url} unreachable ({problem}) and no fresh cached list",
    )


def portal_revocations(home: NodeHome) -> RevocationList:
    """The default revocation source of a node home: its portal, then its cache, through
    the node's one client (its own Keycloak URL and realm from node.toml, its cached
    token)."""
    max_age = home.config.revocation_max_age_s
    return fetch_revoked(PortalClient.for_home(home), home.path / REVOKED_CACHE_FILE,
                         max_age_s=max_age)


# -- run tickets ---------------------------------------------------------------------------
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


# -- consent -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConsentDecision:
    allowed: list[str]
    excluded: int
    basis: str


class ConsentFilter(Protocol):
    """Decides which subjects a purpose may use. The consent issue provides the real one
    (from the portal's consent snapshot); the node only needs this one method."""

    def filter(
        self, *, dataset_id: str, regime: ConsentRegime, purpose: Purpose,
        pseudonyms: Sequence[str],
    ) -> ConsentDecision: ...


class RegimeConsentFilter:
    """The dataset's regime with no consent records at all.

    opt-out: everyone is in (no-one has withdrawn). opt-in: *nobody* is in, because
    without a consent snapshot no subject has given consent; an opt-in dataset can
    only be used once the consent filter of the consent registry is installed.
    """

    def filter(
        self, *, dataset_id: str, regime: ConsentRegime, purpose: Purpose,
        pseudonyms: Sequence[str],
    ) -> ConsentDecision:
        if ConsentRegime(regime) is ConsentRegime.OPT_OUT:
            return ConsentDecision(list(pseudonyms), 0, "opt-out, no withdrawals recorded")
        return ConsentDecision([], len(pseudonyms), "opt-in, no consent snapshot: nobody consented")


# -- the node's store, opened per message --------------------------------------------------
@contextmanager
def node_session(path: str | Path, *, timeout_s: float = 120.0) -> Iterator[NodeHome]:
    """Open a node home's store, waiting while another process holds it.

    DuckDB lets one process at a time open a file for writing, and Flower runs every
    message in a new process, so concurrent runs on one node take turns here. The file
    is closed on exit so that the next process (or `tre node ...`) can open it.
    """
    deadline = time.monotonic() + timeout_s
    home = NodeHome(path).require()
    while True:
        try:
            home.db  # noqa: B018 - opens the store
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            home.__dict__.pop("db", None)
            time.sleep(0.1 + random.random() * 0.3)
    try:
        yield home
    finally:
        home.db.close()
        for name in ("db", "audit"):
            home.__dict__.pop(name, None)


# -- the governor --------------------------------------------------------------------------
@dataclass
class Authorisation:
    claims: PermitClaims
    dataset: PermitDataset
    regime: ConsentRegime
    run_id: str
    app_hash: str
    revocation_source: str

    def summary(self) -> dict[str, Any]:
        return {
            "permit_id": self.claims.permit_id, "run_id": self.run_id,
            "dataset_id": self.dataset.dataset_id, "purpose": str(self.claims.purpose),
            "app_hash": self.app_hash, "revocations": self.revocation_source,
        }


@dataclass
class Cohort:
    pseudonyms: list[str]
    excluded: int
    basis: str


@dataclass
class Governor:
    """All checks of one node home; every refusal is appended to the node audit log."""

    home: NodeHome
    consent_filter: ConsentFilter = field(default_factory=RegimeConsentFilter)
    revocations: Callable[[], RevocationList] | None = None
    run_tickets: Callable[[str], str] | None = None
    """Source of the portal's run ticket for a run id (default: the portal, see above)."""
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self.ledger = PrivacyLedger(self.home.db, self.home.audit, actor=self.home.actor)

    # 1-4 ----------------------------------------------------------------------------------
    def authorise(
        self, token: str, *, app_hash: str | None, run_id: str, dataset_id: str | None = None,
    ) -> Authorisation:
        """Permit signature, validity, revocation, scope and app hash; raises Refusal."""
        try:
            return self._authorise(token, app_hash=app_hash, run_id=run_id, dataset_id=dataset_id)
        except Refusal as refusal:
            self.refuse(refusal, run_id=run_id, token=token, stage="authorise")
            raise

    def _authorise(
        self, token: str, *, app_hash: str | None, run_id: str, dataset_id: str | None,
    ) -> Authorisation:
        revs = (self.revocations or (lambda: portal_revocations(self.home)))()
        jwks = self._keys_for(token, revs)
        try:
            claims = verify_permit(token, jwks, now=self.clock())
        except PermitError as exc:
            msg = str(exc)
            code = ("permit-expired" if "expired" in msg else
                    "permit-not-yet-valid" if "not valid yet" in msg else "permit-invalid")
            raise Refusal(code, msg) from exc
        if claims.permit_id in revs.revoked:
            raise Refusal("permit-revoked", f"permit {claims.permit_id} has been revoked")
        hospital = self.home.config.hospital_id
        mine = claims.dataset_for(hospital)
        if not mine:
            raise Refusal(
                "wrong-hospital",
                f"permit {claims.permit_id} names no dataset of hospital {hospital!r}",
            )
        if dataset_id is not None:
            mine = [d for d in mine if d.dataset_id == dataset_id]
            if not mine:
                raise Refusal(
                    "dataset-not-in-permit",
                    f"dataset {dataset_id!r} is not in permit {claims.permit_id}",
                )
        if len(mine) > 1:
            raise Refusal(
                "dataset-ambiguous",
                f"permit {claims.permit_id} names {len(mine)} datasets here; the run must pick one",
            )
        if not app_hash or app_hash != claims.app_hash:
            raise Refusal(
                "wrong-app",
                f"the app being run (hash {app_hash or 'unknown'}) is not the app approved by "
                f"permit {claims.permit_id} (hash {claims.app_hash})",
            )
        self._check_run_ticket(claims, app_hash, run_id, revs)
        ds = mine[0]
        with self.home.db.reader() as cur:
            row = cur.execute(
                "SELECT consent_regime FROM dataset WHERE dataset_id = ?", [ds.dataset_id]
            ).fetchone()
        if row is None:
            raise Refusal("unknown-dataset", f"dataset {ds.dataset_id!r} is not held by {hospital}")
        return Authorisation(claims, ds, ConsentRegime(row[0]), run_id, app_hash, revs.source)

    def _keys_for(self, token: str, revs: RevocationList) -> dict[str, Any]:
        """The portal's keys that can verify permit `token` (followed by the node:
        federation.node.permit_keys)."""
        try:
            return keys_for(self.home, token, retired=revs.retired_keys)
        except KeyRefused as exc:
            raise Refusal(exc.code, str(exc)) from exc
        except PermitError as exc:
            raise Refusal("permit-invalid", str(exc)) from exc

    def _check_run_ticket(self, claims: PermitClaims, app_hash: str, run_id: str,
                          revs: RevocationList) -> None:
        token = (self.run_tickets or (lambda r: portal_run_ticket(self.home, r)))(run_id)
        try:
            jwks = keys_for(self.home, token, retired=revs.retired_keys)
            ticket = verify_run_ticket(token, jwks, now=self.clock())
        except KeyRefused as exc:
            raise Refusal("run-ticket-invalid", f"the run ticket's key: {exc}") from exc
        except PermitError as exc:
            raise Refusal("run-ticket-invalid", str(exc)) from exc
        hospital = self.home.config.hospital_id
        wrong = [what for what, ok in (
            ("run", ticket.run == run_id), ("permit", ticket.permit_id == claims.permit_id),
            ("app", ticket.app_hash == app_hash), ("hospital", hospital in ticket.hospitals),
        ) if not ok]
        if wrong:
            raise Refusal("run-ticket-mismatch", f"run ticket {ticket.ticket_id} was issued "
                          f"for another {' and '.join(wrong)} than run {run_id} of permit "
                          f"{claims.permit_id} at {hospital}")

    # 5 --------------------------------------------------------------------------------------
    def cohort(self, auth: Authorisation, split: str) -> Cohort:
        """Subjects of the split that the consent filter allows for the permit's purpose."""
        from federation.training.data import split_pseudonyms

        everyone = split_pseudonyms(self.home.db, auth.dataset.dataset_id, split)
        try:
            decision = self.consent_filter.filter(
                dataset_id=auth.dataset.dataset_id, regime=auth.regime,
                purpose=auth.claims.purpose, pseudonyms=everyone,
            )
        except Refusal as refusal:  # e.g. no fresh consent snapshot
            self.refuse(refusal, run_id=auth.run_id, permit_id=auth.claims.permit_id,
                        stage="consent")
            raise
        return Cohort(decision.allowed, decision.excluded, decision.basis)

    # 6 --------------------------------------------------------------------------------------
    def reserve(self, auth: Authorisation, plan: Any) -> Reservation:
        """Reserve the run's planned ε (a DPPlan) against the dataset total and permit cap."""
        try:
            return self.ledger.reserve(
                run_id=auth.run_id, permit_id=auth.claims.permit_id,
                dataset_id=auth.dataset.dataset_id, epsilon=plan.target_epsilon,
                delta=plan.delta, permit_epsilon_cap=auth.dataset.epsilon_cap,
                accountant=plan.accountant, noise_multiplier=plan.noise_multiplier,
                sample_rate=plan.sample_rate, steps_per_round=plan.steps_per_round,
                rounds=plan.rounds, max_grad_norm=plan.max_grad_norm,
            )
        except BudgetError as exc:
            refusal = Refusal("budget", str(exc))
            self.refuse(refusal, run_id=auth.run_id, permit_id=auth.claims.permit_id,
                        stage="reserve")
            raise refusal from exc

    def charge_round(
        self, auth: Authorisation, res: Reservation, *, server_round: int, steps: int,
    ) -> float:
        """Charge one round's steps before its data is read; returns the run's ε after it.
        Refuses (and releases what is left) when the round would pass the reservation."""
        from federation.training.dp import epsilon_of

        history = self.ledger.history(res.reservation_id)
        eps = epsilon_of(res.accountant, [*history, (res.noise_multiplier, res.sample_rate,
                                                     steps)], res.delta)
        try:
            self.ledger.charge(res, round=server_round, steps=steps, epsilon_run=eps,
                               noise_multiplier=res.noise_multiplier, sample_rate=res.sample_rate)
        except BudgetError as exc:
            if self.ledger.is_open(res.reservation_id):
                self.ledger.release(res, reason=f"stopped before round {server_round}: {exc}")
            refusal = Refusal("budget-exhausted", str(exc))
            self.refuse(refusal, run_id=auth.run_id, permit_id=auth.claims.permit_id,
                        stage="charge")
            raise refusal from exc
        return eps

    def meter(self, auth: Authorisation, *, kind: str, server_round: int,
              weights_sha256: str) -> None:
        """Count and bind a query of the run before it reads anything (ledger
        `record_query`); a refusal is audited here."""
        try:
            self.ledger.record_query(
                run_id=auth.run_id, permit_id=auth.claims.permit_id,
                dataset_id=auth.dataset.dataset_id, kind=kind, round=server_round,
                weights_sha256=weights_sha256)
        except QueryRefused as exc:
            refusal = Refusal(exc.code, str(exc))
            self.refuse(refusal, run_id=auth.run_id, permit_id=auth.claims.permit_id,
                        stage=kind)
            raise refusal from exc

    def audit_read(self, auth: Authorisation, *, split: str, records: int, excluded: int,
                   purpose: str) -> None:
        self.home.audit.record(
            actor=self.home.actor, action=AuditAction.DATA_READ, object_type="dataset",
            object_id=auth.dataset.dataset_id,
            details={**auth.summary(), "split": split, "records": records,
                     "excluded_by_consent": excluded, "for": purpose},
        )

    def refuse(self, refusal: Refusal, *, run_id: str, token: str | None = None,
               permit_id: str | None = None, stage: str) -> None:
        """Audit a refusal (its own transaction: nothing else is written)."""
        if permit_id is None and token:
            permit_id = _permit_id_for_display(token)
        self.home.audit.record(
            actor=self.home.actor, action=AuditAction.FEDERATION_REFUSED, object_type="run",
            object_id=run_id,
            details={"code": refusal.code, "reason": refusal.reason, "stage": stage,
                     "permit_id": permit_id},
        )


def _permit_id_for_display(token: str) -> str | None:
    """The permit id a token *claims* (unverified: for the audit trail only)."""
    from access_control.permits import unverified_claims

    try:
        return str(unverified_claims(token).get("permit_id"))
    except Exception:  # noqa: BLE001 - garbage tokens are audited without an id
        return None
