"""The node's consent filter, fed by the portal's consent snapshots (DESIGN §2.2, §5 Consent).

Before every run and query the node pulls `GET /v1/consents/snapshot?since=V` with its
service account (a delta after the first full pull, Parquet on the wire) and keeps
the result in `node.duckdb`, one row per consent and purpose, split into active and
withdrawn tables, so a decision is one DuckDB join that reads only the rows it needs;
a delta lands in a small overlay, so a pull costs what the delta holds, not what the
cache holds.
If the portal cannot be reached the cached snapshot is used while it is younger than
`NodeSettings.consent_max_age_s`; after that the node refuses to run.

Rules, for a permit purpose P (with `P.covered_by()`: AI training is covered by
consent to scientific research too), evaluated on the node's date:

* opt-in  (data altruism): a subject is used only with an *active* consent covering
  P whose validity period includes today;
* opt-out (objection): every subject is used except those with a *withdrawn* consent
  (an objection) covering P;
* in both regimes a withdrawal covering P wins over any other consent for P, from
  any organisation: the conservative reading of conflicting statements.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from federation.node.home import NodeHome
from federation.node.portal_client import PortalClient, PortalError
from federation.node.refusal import Refusal
from federation.node.store import dataset_pseudonyms, dataset_regime
from tre.core.audit import AuditAction
from tre.core.db import Database, Migration
from tre.core.schemas import ConsentRegime, ConsentStatus, Purpose

COMPONENT = "node_consent"
MIGRATIONS: list[Migration] = [
    (
        1,
        """
        CREATE TABLE consent_cache (
            consent_id VARCHAR NOT NULL,
            subject VARCHAR NOT NULL,
            organisation VARCHAR NOT NULL,
            purpose VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            valid_from DATE,
            valid_to DATE,
            version BIGINT NOT NULL
        );
        CREATE TABLE consent_sync (
            version BIGINT NOT NULL,
            kind VARCHAR NOT NULL,
            received BIGINT NOT NULL,
            consents BIGINT NOT NULL,
            portal_url VARCHAR NOT NULL,
            pulled_at DOUBLE NOT NULL
        )
        """,
    ),
    (
        2,
        # Split by status: an opt-out decision then scans only the (few) withdrawals,
        # an opt-in one the active rows, instead of filtering every row each time.
        """
        CREATE TABLE consent_active AS SELECT * FROM consent_cache WHERE status = 'active';
        CREATE TABLE consent_withdrawn AS
            SELECT * FROM consent_cache WHERE status = 'withdrawn';
        DROP TABLE consent_cache;
        CREATE VIEW consent_cache AS
            SELECT * FROM consent_active UNION ALL SELECT * FROM consent_withdrawn
        """,
    ),
    (
        3,
        # A delta finds the rows it replaces by an integer key: scanning 2 M compressed
        # consent ids for 100 changed ones was most of a per-run pull.
        # `consent_key_probe` records what the key function gave when the rows were
        # keyed, so a DuckDB whose md5_number() differs re-keys them (`migrate`).
        """
        DROP VIEW consent_cache;
        ALTER TABLE consent_active ADD COLUMN consent_key UHUGEINT;
        ALTER TABLE consent_withdrawn ADD COLUMN consent_key UHUGEINT;
        UPDATE consent_active SET consent_key = md5_number(consent_id);
        UPDATE consent_withdrawn SET consent_key = md5_number(consent_id);
        CREATE TABLE consent_key_probe AS SELECT md5_number('consent-key-probe') AS probe;
        CREATE VIEW consent_cache AS
            SELECT * FROM consent_active UNION ALL SELECT * FROM consent_withdrawn
        """,
    ),
    (
        4,
        # A delta no longer deletes from the large tables (a scan of every key per run):
        # its consents go to a small overlay, and their keys to `consent_replaced`, which
        # masks their older rows; `compact` folds the overlay in now and then.
        """
        DROP VIEW consent_cache;
        CREATE TABLE consent_overlay AS SELECT * FROM consent_active LIMIT 0;
        CREATE TABLE consent_replaced (consent_key UHUGEINT NOT NULL);
        CREATE VIEW consent_active_current AS
            SELECT a.* FROM consent_active a
                ANTI JOIN consent_replaced r ON a.consent_key = r.consent_key
            UNION ALL SELECT * FROM consent_overlay WHERE status = 'active';
        CREATE VIEW consent_withdrawn_current AS
            SELECT w.* FROM consent_withdrawn w
                ANTI JOIN consent_replaced r ON w.consent_key = r.consent_key
            UNION ALL SELECT * FROM consent_overlay WHERE status = 'withdrawn';
        CREATE VIEW consent_cache AS
            SELECT * FROM consent_active_current
            UNION ALL SELECT * FROM consent_withdrawn_current
        """,
    ),
]
# One row per consent and purpose, no primary key or index, so that bulk loads stay
# index-free and fast. A full snapshot fills the two base tables (by status). A delta
# puts its consents' rows in `consent_overlay` and their keys (`consent_key`: MD5 of
# the consent id as an integer) in `consent_replaced`, in one transaction; the
# `*_current` views are the base rows not replaced plus the overlay, and every
# decision reads them. Once the overlay holds `OVERLAY_MAX_CONSENTS`, `compact` moves
# it into the base tables (one scan of their keys, instead of one per delta).
# `consent_cache` is the view over everything current.
CACHE_TABLES = {ConsentStatus.ACTIVE.value: "consent_active",
                ConsentStatus.WITHDRAWN.value: "consent_withdrawn"}
OVERLAY_MAX_CONSENTS = 10_000

SNAPSHOT_COLUMNS = {"consent_id", "subject", "organisation", "purposes", "status",
                    "valid_from", "valid_to", "version"}
PULL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ConsentDecision:
    allowed: list[str]
    excluded: int
    basis: str


class ConsentFilter(Protocol):
    """Decides which subjects a purpose may use. `SnapshotConsentFilter` is the real
    one (the portal's consent snapshot); the gate only needs this one method."""

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


class ConsentUnavailable(Refusal):
    """No consent state the node may rely on: never pulled, or stale and the portal is
    unreachable. The node runs nothing on the dataset (invariant 2)."""


@dataclass(frozen=True)
class SnapshotState:
    version: int
    pulled_at: float
    consents: int
    source: str  # "portal" (pulled just now) or "cache"

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.pulled_at)


_migrated: weakref.WeakSet[Database] = weakref.WeakSet()


def migrate(home: NodeHome) -> None:
    """Create the cache tables once per open store (cheap to call before every use), and
    re-key them if this DuckDB's md5_number() is not the one that keyed them (an upgrade): a
    delta must find every row it replaces."""
    if home.db not in _migrated:
        home.db.migrate(COMPONENT, MIGRATIONS)
        with home.db.transaction() as cur:
            if cur.execute("SELECT probe <> md5_number('consent-key-probe')"
                           " FROM consent_key_probe").fetchall()[0][0]:
                compact(cur)  # with the old keys, which the replaced keys were made with
                for name in CACHE_TABLES.values():
                    cur.execute(f"UPDATE {name} SET consent_key = md5_number(consent_id)")
                cur.execute("UPDATE consent_key_probe"
                            " SET probe = md5_number('consent-key-probe')")
        _migrated.add(home.db)


def cached_state(home: NodeHome) -> SnapshotState | None:
    """The last successful pull, if any."""
    migrate(home)
    with home.db.reader() as cur:
        row = cur.execute(
            "SELECT version, pulled_at, consents FROM consent_sync"
            " ORDER BY rowid DESC LIMIT 1"
        ).fetchall()
    return SnapshotState(row[0][0], row[0][1], row[0][2], "cache") if row else None


def apply_snapshot(home: NodeHome, table: pa.Table, *, kind: str, since: int, version: int,
                   portal_url: str, now: float, total: int | None = None) -> SnapshotState:
    """Install a full snapshot (replace) or a delta (upsert by consent id), audited, in
    one transaction: a failed pull leaves the previous state whole. `total`: the consents
    the portal's registry holds at `version` (what the cache then holds); without it a
    delta counts the consents it replaces, one more scan of the cache."""
    missing = SNAPSHOT_COLUMNS - set(table.column_names)
    if missing:
        raise ValueError(f"the consent snapshot lacks columns {sorted(missing)}")
    if kind not in ("full", "delta"):
        raise ValueError(f"unknown snapshot kind {kind!r}")
    unknown = set(pc.unique(table["status"]).to_pylist()) - set(CACHE_TABLES)
    if unknown:
        raise ValueError(f"the consent snapshot holds unknown statuses "
                         f"{sorted(unknown, key=str)}")
    migrate(home)
    with home.db.transaction() as cur:
        cur.register("consent_incoming", table)
        try:
            if kind == "full":
                consents = table.num_rows
                for name in (*CACHE_TABLES.values(), "consent_overlay", "consent_replaced"):
                    cur.execute(f"DELETE FROM {name}")
                for status_value, name in CACHE_TABLES.items():
                    cur.execute(f"INSERT INTO {name} {_INCOMING_ROWS} WHERE status = ?",
                                [status_value])
            else:
                consents = total if total is not None else (
                    _last_count(cur) - _replaced(cur) + table.num_rows)
                if table.num_rows:
                    _overlay(cur)
        finally:
            cur.unregister("consent_incoming")
        cur.execute("INSERT INTO consent_sync VALUES (?, ?, ?, ?, ?, ?)",
                    [version, kind, table.num_rows, consents, portal_url, now])
        home.audit.append(cur, actor=home.actor, action=AuditAction.CONSENT_SYNC,
                          object_type="consent_snapshot", object_id=str(version),
                          details={"kind": kind, "since": since, "version": version,
                                   "received": table.num_rows, "consents": consents,
                                   "portal": portal_url})
    return SnapshotState(version, now, consents, "portal")


# A delta replaces the cached rows of its consents, found by `consent_key` alone, an
# integer comparison: comparing the (compressed) ids of every row, or even reading them,
# cost several times more. The key is 128 bits of MD5 of a portal-made random id: equal
# keys are equal ids.
_INCOMING_KEYS = "SELECT md5_number(consent_id) FROM consent_incoming"
#: the cache's rows of the incoming snapshot: one per consent and purpose
_INCOMING_ROWS = ("SELECT consent_id, subject, organisation, unnest(purposes) AS purpose,"
                  " status, valid_from, valid_to, version, md5_number(consent_id)"
                  " FROM consent_incoming")


def _overlay(cur: Any) -> None:
    """Install a delta's consents into the overlay, masking their older rows, and
    compact once the overlay is large (see `OVERLAY_MAX_CONSENTS`)."""
    cur.execute(f"DELETE FROM consent_overlay WHERE consent_key IN ({_INCOMING_KEYS})")
    cur.execute("INSERT INTO consent_replaced SELECT DISTINCT k FROM"
                f" ({_INCOMING_KEYS}) AS incoming(k)"
                " WHERE k NOT IN (SELECT consent_key FROM consent_replaced)")
    cur.execute(f"INSERT INTO consent_overlay {_INCOMING_ROWS}")
    if cur.execute("SELECT count(*) FROM consent_replaced").fetchall()[0][0] \
            >= OVERLAY_MAX_CONSENTS:
        compact(cur)


def compact(cur: Any) -> None:
    """Fold the overlay into the base tables: the replaced consents' rows go, the
    overlay's rows take their place (one scan of the base tables' keys)."""
    if not cur.execute("SELECT count(*) FROM consent_replaced").fetchall()[0][0]:
        return
    for status_value, name in CACHE_TABLES.items():
        cur.execute(f"DELETE FROM {name}"
                    " WHERE consent_key IN (SELECT consent_key FROM consent_replaced)")
        cur.execute(f"INSERT INTO {name} SELECT * FROM consent_overlay WHERE status = ?",
                    [status_value])
    cur.execute("DELETE FROM consent_overlay")
    cur.execute("DELETE FROM consent_replaced")


def _replaced(cur: Any) -> int:
    """How many consents of `consent_incoming` the cache holds (a scan of every key)."""
    return cur.execute("SELECT count(DISTINCT consent_key) FROM consent_cache"
                       f" WHERE consent_key IN ({_INCOMING_KEYS})").fetchall()[0][0]


def _last_count(cur: Any) -> int:
    row = cur.execute("SELECT consents FROM consent_sync ORDER BY rowid DESC LIMIT 1"
                      ).fetchall()
    return row[0][0] if row else 0


def pull_snapshot(home: NodeHome, client: PortalClient | None = None, *,
                  clock: Callable[[], float] = time.time) -> SnapshotState:
    """Fetch the changes since the cached version and install them; raises PortalError
    (status None when the portal or Keycloak cannot be reached)."""
    client = client or PortalClient.for_home(home, timeout=PULL_TIMEOUT_S)
    state = cached_state(home)
    since = state.version if state else 0
    snap = client.consent_snapshot(since)
    return apply_snapshot(home, snap.table, kind=snap.kind, since=since, version=snap.version,
                          portal_url=client.portal_url, now=clock(), total=snap.total)


def ensure_fresh(home: NodeHome, client: PortalClient | None = None, *,
                 clock: Callable[[], float] = time.time) -> SnapshotState:
    """Pull now; if that fails, fall back to a cached snapshot younger than the node's
    `consent_max_age_s`; otherwise raise ConsentUnavailable (audited)."""
    try:
        return pull_snapshot(home, client, clock=clock)
    except PortalError as exc:
        problem = str(exc)
    state = cached_state(home)
    max_age = home.config.consent_max_age_s
    now = clock()
    if state is not None and state.age_s(now) <= max_age:
        home.audit.record(actor=home.actor, action=AuditAction.CONSENT_SYNC_FAILED,
                          object_type="consent_snapshot", object_id=str(state.version),
                          details={"problem": problem, "using_cache_age_s": state.age_s(now),
                                   "max_age_s": max_age})
        return state
    if state is None:
        refusal = ConsentUnavailable(
            "consent-unavailable",
            f"no consent snapshot has ever been pulled and the portal cannot be reached "
            f"({problem}); nothing runs until `tre node` can pull one")
    else:
        refusal = ConsentUnavailable(
            "consent-stale",
            f"the cached consent snapshot (version {state.version}) is "
            f"{state.age_s(now):.0f}s old, above the maximum of {max_age}s, and the portal "
            f"cannot be reached ({problem}); refusing to use possibly withdrawn consent")
    home.audit.record(actor=home.actor, action=AuditAction.CONSENT_REFUSED,
                      object_type="consent_snapshot",
                      object_id=str(state.version if state else 0),
                      details={"code": refusal.code, "reason": refusal.reason})
    raise refusal


def decide(home: NodeHome, *, regime: ConsentRegime, purpose: Purpose,
           pseudonyms: Sequence[str], today: date) -> tuple[list[str], int]:
    """(allowed pseudonyms, distinct, in input order; how many distinct candidates were
    excluded), by one DuckDB query over the cached snapshot."""
    regime, purpose = ConsentRegime(regime), Purpose(purpose)
    # Purpose values are enum members (checked above), so inlining them is safe, and it
    # lets DuckDB push the purpose test into the scan instead of a subquery join.
    covering = ", ".join(f"'{p.value}'" for p in sorted(purpose.covered_by()))
    candidates = pa.table({"ord": pa.array(np.arange(len(pseudonyms), dtype=np.int64)),
                           "pseudonym": pa.array(pseudonyms, pa.string())})
    withdrawn = (
        "NOT EXISTS (SELECT 1 FROM consent_withdrawn_current w WHERE w.subject = i.pseudonym"
        f" AND w.purpose IN ({covering}))"
    )
    consented = (
        "EXISTS (SELECT 1 FROM consent_active_current a WHERE a.subject = i.pseudonym"
        f" AND a.purpose IN ({covering})"
        " AND (a.valid_from IS NULL OR a.valid_from <= $today)"
        " AND (a.valid_to IS NULL OR a.valid_to >= $today))"
    )
    if regime is ConsentRegime.OPT_OUT:
        where, params = withdrawn, {}
    else:
        where, params = f"{consented} AND {withdrawn}", {"today": today}
    with home.db.reader() as cur:
        cur.register("consent_candidates", candidates)
        try:
            distinct = cur.execute("SELECT count(DISTINCT pseudonym) FROM consent_candidates"
                                   ).fetchall()[0][0]
            # numpy, not fetchall: one array instead of a tuple per row
            allowed = cur.execute(
                "SELECT i.pseudonym FROM consent_candidates i WHERE " + where +
                " ORDER BY i.ord", params).fetchnumpy()["pseudonym"].tolist()
        finally:
            cur.unregister("consent_candidates")
    if distinct < len(pseudonyms):  # duplicates in the input: report each subject once
        allowed = list(dict.fromkeys(allowed))
    return allowed, distinct - len(allowed)


class SnapshotConsentFilter:
    """The `ConsentFilter` backed by the portal's
    consent registry: pulls (or falls back to a fresh cache), then decides in DuckDB.

    Give it the node home (or its path: then it opens the store for each call and
    closes it again, as Flower starts a new process per message).
    """

    def __init__(self, home: NodeHome | str | Path, *, client: PortalClient | None = None,
                 clock: Callable[[], float] = time.time, pull: bool = True) -> None:
        self._home = home
        self._client = client
        self.clock = clock
        self.pull = pull
        self.last_state: SnapshotState | None = None

    @contextmanager
    def _session(self) -> Iterator[NodeHome]:
        if isinstance(self._home, NodeHome):
            yield self._home
            return
        home = NodeHome(self._home).require()
        try:
            yield home
        finally:
            if "db" in home.__dict__:
                home.db.close()
            for name in ("db", "audit"):
                home.__dict__.pop(name, None)

    def filter(self, *, dataset_id: str, regime: ConsentRegime | None = None,
               purpose: Purpose, pseudonyms: Sequence[str]) -> ConsentDecision:
        """Subjects of `pseudonyms` the dataset's regime lets `purpose` use, after a pull.
        `regime` defaults to the dataset's `consent_regime`. Raises ConsentUnavailable."""
        with self._session() as home:
            if regime is None:
                regime = dataset_regime(home, dataset_id)
            if self.pull:
                state = ensure_fresh(home, self._client, clock=self.clock)
            else:
                state = cached_state(home)
                if state is None or state.age_s(self.clock()) > home.config.consent_max_age_s:
                    raise ConsentUnavailable("consent-stale", "no fresh consent snapshot cached")
            self.last_state = state
            today = datetime.fromtimestamp(self.clock(), UTC).date()
            allowed, excluded = decide(home, regime=regime, purpose=purpose,
                                       pseudonyms=pseudonyms, today=today)
            basis = (f"{ConsentRegime(regime).value} for {Purpose(purpose).value}, consent "
                     f"snapshot v{state.version} ({state.source})")
            home.audit.record(actor=home.actor, action=AuditAction.CONSENT_FILTER,
                              object_type="dataset",
                              object_id=dataset_id,
                              details={"regime": ConsentRegime(regime).value,
                                       "purpose": Purpose(purpose).value,
                                       "snapshot_version": state.version,
                                       "snapshot_source": state.source,
                                       "candidates": len(allowed) + excluded,
                                       "allowed": len(allowed), "excluded": excluded})
            return ConsentDecision(allowed, excluded, basis)

    def filter_dataset(self, dataset_id: str, purpose: Purpose) -> ConsentDecision:
        """The same decision for every subject the dataset holds (images or clinical)."""
        with self._session() as home:
            pseudonyms = dataset_pseudonyms(home, dataset_id)
        return self.filter(dataset_id=dataset_id, purpose=purpose, pseudonyms=pseudonyms)


def status(home: NodeHome, *, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """For `tre node status`: the cached snapshot's version, age and whether it may be used."""
    state = cached_state(home)
    if state is None:
        return {"version": None, "age_s": None, "consents": 0, "fresh": False}
    age = state.age_s(clock())
    return {"version": state.version, "age_s": round(age, 1), "consents": state.consents,
            "pulled_at": datetime.fromtimestamp(state.pulled_at, UTC).isoformat(),
            "fresh": age <= home.config.consent_max_age_s}


def consent_filter_for(home: NodeHome, kind: str = "snapshot") -> ConsentFilter:
    """The node's consent filter, chosen by the operator (SuperNode node config
    `consent-filter`), never by a run: `snapshot` (the portal's consent registry, pulled
    per run) or `regime` (the dataset's regime with no consent records)."""
    if kind == "regime":
        return RegimeConsentFilter()
    if kind == "snapshot":
        return SnapshotConsentFilter(home)
    raise Refusal("consent-filter", f"unknown consent filter {kind!r} in node config")
