"""The node's privacy-budget ledger in `node.duckdb` (DESIGN §5 "Privacy accounting").

Append-only: a run *reserves* the ε it plans to spend on a dataset, *charges*
each round's steps (with everything needed to recompute ε: accountant, noise
multiplier, sample rate, steps), and *releases* what it did not use. Nothing is
ever updated in place, so the ledger is its own history and an auditor can
recompute every figure.

Budget arithmetic, per dataset (basic composition across runs, which is sound):

    committed = Σ charges of closed runs + Σ max(reserved, charged) of open runs
    remaining = total − committed

and per permit and dataset the same sum must stay within the permit's ε cap.
Reservation checks and inserts happen in one `Database.transaction()` (a
process-wide lock plus DuckDB's file lock across processes), so two runs
racing for the last budget cannot both win. Every reservation, charge and
release is appended to the node audit log in the same transaction.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import duckdb

from tre.core.audit import AuditAction, AuditLog
from tre.core.db import Database, Migration, rows_as_dicts

COMPONENT = "privacy_ledger"
MAX_DATASET_EPSILON = 1000.0
"""Above this a 'budget' no longer bounds anything (e^ε overflows any useful guarantee)."""

MIGRATIONS: list[Migration] = [
    (
        1,
        """
        CREATE TABLE privacy_budget (
            dataset_id VARCHAR NOT NULL,
            epsilon_total DOUBLE NOT NULL CHECK (epsilon_total >= 0),
            set_by VARCHAR NOT NULL,
            set_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            seq BIGINT NOT NULL
        );
        CREATE TABLE privacy_reservation (
            reservation_id VARCHAR PRIMARY KEY,
            run_id VARCHAR NOT NULL,
            permit_id VARCHAR NOT NULL,
            dataset_id VARCHAR NOT NULL,
            epsilon DOUBLE NOT NULL CHECK (epsilon > 0),
            delta DOUBLE NOT NULL CHECK (delta > 0),
            accountant VARCHAR NOT NULL,
            noise_multiplier DOUBLE NOT NULL,
            sample_rate DOUBLE NOT NULL,
            steps_per_round INTEGER NOT NULL,
            rounds INTEGER NOT NULL,
            max_grad_norm DOUBLE NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            UNIQUE (run_id, permit_id, dataset_id)
        );
        CREATE TABLE privacy_charge (
            charge_id VARCHAR PRIMARY KEY,
            reservation_id VARCHAR NOT NULL,
            run_id VARCHAR NOT NULL,
            permit_id VARCHAR NOT NULL,
            dataset_id VARCHAR NOT NULL,
            round INTEGER NOT NULL,
            epsilon DOUBLE NOT NULL,
            epsilon_run DOUBLE NOT NULL,
            delta DOUBLE NOT NULL,
            accountant VARCHAR NOT NULL,
            noise_multiplier DOUBLE NOT NULL,
            sample_rate DOUBLE NOT NULL,
            steps INTEGER NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            UNIQUE (reservation_id, round)
        );
        CREATE TABLE privacy_release (
            reservation_id VARCHAR PRIMARY KEY,
            run_id VARCHAR NOT NULL,
            dataset_id VARCHAR NOT NULL,
            epsilon_charged DOUBLE NOT NULL,
            epsilon_released DOUBLE NOT NULL,
            reason VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )
        """,
    ),
    (
        2,
        """
        CREATE TABLE run_query (
            query_id VARCHAR PRIMARY KEY,
            run_id VARCHAR NOT NULL,
            permit_id VARCHAR NOT NULL,
            dataset_id VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            round INTEGER NOT NULL,
            weights_sha256 VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            UNIQUE (run_id, dataset_id, kind, round)
        )
        """,
    ),
]
# privacy_budget is append-only too: the latest row (highest seq) per dataset is the policy.


class BudgetError(Exception):
    """A reservation or charge would overspend; nothing was written."""


class QueryRefused(Exception):
    """A run asked this node for more than its terms allow; nothing was written."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


QUERY_KINDS = ("train-input", "evaluate", "audit", "calibrate")
#: kinds asked once per run, of the weights the run last evaluated here
FINAL_KINDS = ("audit", "calibrate")


@dataclass(frozen=True)
class Reservation:
    reservation_id: str
    run_id: str
    permit_id: str
    dataset_id: str
    epsilon: float
    delta: float
    accountant: str
    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    rounds: int
    max_grad_norm: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Charge:
    reservation_id: str
    round: int
    epsilon: float
    epsilon_run: float
    delta: float
    accountant: str
    noise_multiplier: float
    sample_rate: float
    steps: int


@dataclass(frozen=True)
class BudgetStatus:
    dataset_id: str
    epsilon_total: float | None
    epsilon_spent: float
    epsilon_reserved: float
    epsilon_remaining: float | None
    active_runs: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_RES_COLS = (
    "reservation_id, run_id, permit_id, dataset_id, epsilon, delta, accountant,"
    " noise_multiplier, sample_rate, steps_per_round, rounds, max_grad_norm"
)


class PrivacyLedger:
    """Budget policy, reservations, charges and releases of one node store."""

    def __init__(self, db: Database, audit: AuditLog, *, actor: str) -> None:
        self.db = db
        self.audit = audit
        self.actor = actor
        db.migrate(COMPONENT, MIGRATIONS)

    # -- policy -------------------------------------------------------------------
    def set_budget(self, dataset_id: str, epsilon_total: float, *, by: str | None = None) -> None:
        """Set a dataset's total ε (operator policy). Lowering it below what is already
        committed is allowed: it simply leaves no budget for new runs."""
        if not math.isfinite(epsilon_total) or not 0 <= epsilon_total <= MAX_DATASET_EPSILON:
            raise ValueError(f"a dataset's total ε must be a number from 0 to "
                             f"{MAX_DATASET_EPSILON:g}, not {epsilon_total}")
        with self.db.transaction() as cur:
            seq = cur.execute("SELECT coalesce(max(seq), 0) + 1 FROM privacy_budget").fetchone()[0]
            previous = _total(cur, dataset_id)
            cur.execute(
                "INSERT INTO privacy_budget (dataset_id, epsilon_total, set_by, seq)"
                " VALUES (?,?,?,?)",
                [dataset_id, float(epsilon_total), by or self.actor, seq],
            )
            self.audit.append(
                cur, actor=by or self.actor, action=AuditAction.PRIVACY_BUDGET_SET,
                object_type="dataset",
                object_id=dataset_id,
                details={"epsilon_total": float(epsilon_total), "previous": previous},
            )

    def status(self, dataset_id: str) -> BudgetStatus:
        with self.db.reader() as cur:
            return _status(cur, dataset_id)

    def statuses(self) -> list[BudgetStatus]:
        with self.db.reader() as cur:
            ids = [
                r[0] for r in cur.execute(
                    "SELECT dataset_id FROM privacy_budget UNION"
                    " SELECT dataset_id FROM privacy_reservation ORDER BY 1"
                ).fetchall()
            ]
            return [_status(cur, d) for d in ids]

    # -- reservations -------------------------------------------------------------
    def reserve(
        self,
        *,
        run_id: str,
        permit_id: str,
        dataset_id: str,
        epsilon: float,
        delta: float,
        permit_epsilon_cap: float,
        accountant: str,
        noise_multiplier: float,
        sample_rate: float,
        steps_per_round: int,
        rounds: int,
        max_grad_norm: float,
    ) -> Reservation:
        """Atomically reserve ε for a whole run, or raise BudgetError leaving nothing written.

        Checks the dataset's total (operator policy) and the permit's cap (summed over
        every run under the permit). A run that already holds a reservation gets it back.
        """
        with self.db.transaction() as cur:
            existing = self._find(cur, run_id, permit_id, dataset_id)
            if existing is not None:
                return existing
            total = _total(cur, dataset_id)
            if total is None:
                raise BudgetError(
                    f"no privacy budget is set for dataset {dataset_id!r}: the node operator "
                    "must run `tre node budget set`"
                )
            committed = _committed(cur, dataset_id)
            remaining = total - committed
            if epsilon > remaining + 1e-12:
                raise BudgetError(
                    f"ε {epsilon:.4g} requested on dataset {dataset_id!r} is above its remaining "
                    f"budget {max(remaining, 0):.4g} (total {total:.4g}, committed {committed:.4g})"
                )
            permit_used = _committed(cur, dataset_id, permit_id)
            if epsilon > permit_epsilon_cap - permit_used + 1e-12:
                raise BudgetError(
                    f"ε {epsilon:.4g} requested is above what permit {permit_id} has left on "
                    f"{dataset_id!r}: cap {permit_epsilon_cap:.4g}, already used {permit_used:.4g}"
                )
            res = Reservation(
                reservation_id=f"res_{uuid.uuid4().hex[:16]}", run_id=run_id, permit_id=permit_id,
                dataset_id=dataset_id, epsilon=float(epsilon), delta=float(delta),
                accountant=accountant, noise_multiplier=float(noise_multiplier),
                sample_rate=float(sample_rate), steps_per_round=int(steps_per_round),
                rounds=int(rounds), max_grad_norm=float(max_grad_norm),
            )
            cur.execute(
                f"INSERT INTO privacy_reservation ({_RES_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                list(asdict(res).values()),
            )
            self.audit.append(
                cur, actor=self.actor, action=AuditAction.PRIVACY_RESERVE, object_type="dataset",
                object_id=dataset_id,
                details={**res.as_dict(), "remaining_before": remaining,
                         "permit_used_before": permit_used},
            )
            return res

    def reservation(self, run_id: str, permit_id: str, dataset_id: str) -> Reservation | None:
        with self.db.reader() as cur:
            return self._find(cur, run_id, permit_id, dataset_id)

    def is_open(self, reservation_id: str) -> bool:
        with self.db.reader() as cur:
            return cur.execute(
                "SELECT count(*) FROM privacy_release WHERE reservation_id = ?", [reservation_id]
            ).fetchone()[0] == 0

    # -- charges ------------------------------------------------------------------
    def history(self, reservation_id: str) -> list[tuple[float, float, int]]:
        """(noise multiplier, sample rate, steps) of every charged round, in order: what an
        Opacus accountant needs to be rebuilt in a fresh process."""
        with self.db.reader() as cur:
            return _history(cur, reservation_id)

    def charges(self, run_id: str | None = None, dataset_id: str | None = None) -> list[dict]:
        sql, params = "SELECT * FROM privacy_charge WHERE 1=1", []
        if run_id is not None:
            sql += " AND run_id = ?"
            params.append(run_id)
        if dataset_id is not None:
            sql += " AND dataset_id = ?"
            params.append(dataset_id)
        with self.db.reader() as cur:
            cur.execute(sql + " ORDER BY created_at, round", params)
            return rows_as_dicts(cur)

    def charge(
        self, reservation: Reservation, *, round: int, steps: int, epsilon_run: float,
        noise_multiplier: float, sample_rate: float,
    ) -> Charge:
        """Record a round's steps and the run's ε after it (computed by the caller's
        accountant over the ledger history plus these steps). Refuses, writing nothing,
        if the run's ε would pass its reservation or the reservation is closed."""
        with self.db.transaction() as cur:
            if cur.execute(
                "SELECT count(*) FROM privacy_release WHERE reservation_id = ?",
                [reservation.reservation_id],
            ).fetchone()[0]:
                raise BudgetError(f"reservation {reservation.reservation_id} is closed")
            if cur.execute(
                "SELECT count(*) FROM privacy_charge WHERE reservation_id = ? AND round = ?",
                [reservation.reservation_id, round],
            ).fetchone()[0]:
                raise BudgetError(f"round {round} of run {reservation.run_id} was already charged")
            before = _charged(cur, reservation.reservation_id)
            if epsilon_run > reservation.epsilon + 1e-9:
                raise BudgetError(
                    f"round {round} would bring run {reservation.run_id} to ε {epsilon_run:.4g}, "
                    f"above its reserved {reservation.epsilon:.4g}"
                )
            ch = Charge(
                reservation_id=reservation.reservation_id, round=int(round),
                epsilon=float(epsilon_run - before), epsilon_run=float(epsilon_run),
                delta=reservation.delta, accountant=reservation.accountant,
                noise_multiplier=float(noise_multiplier), sample_rate=float(sample_rate),
                steps=int(steps),
            )
            cur.execute(
                "INSERT INTO privacy_charge (charge_id, reservation_id, run_id, permit_id,"
                " dataset_id, round, epsilon, epsilon_run, delta, accountant, noise_multiplier,"
                " sample_rate, steps) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [f"chg_{uuid.uuid4().hex[:16]}", ch.reservation_id, reservation.run_id,
                 reservation.permit_id, reservation.dataset_id, ch.round, ch.epsilon,
                 ch.epsilon_run, ch.delta, ch.accountant, ch.noise_multiplier, ch.sample_rate,
                 ch.steps],
            )
            self.audit.append(
                cur, actor=self.actor, action=AuditAction.PRIVACY_CHARGE, object_type="dataset",
                object_id=reservation.dataset_id,
                details={"run_id": reservation.run_id, "permit_id": reservation.permit_id,
                         **asdict(ch)},
            )
            return ch

    def release(self, reservation: Reservation, *, reason: str) -> float:
        """Close a reservation and give back the ε it did not charge. Idempotent."""
        with self.db.transaction() as cur:
            if cur.execute(
                "SELECT count(*) FROM privacy_release WHERE reservation_id = ?",
                [reservation.reservation_id],
            ).fetchone()[0]:
                return 0.0
            charged = _charged(cur, reservation.reservation_id)
            released = max(reservation.epsilon - charged, 0.0)
            cur.execute(
                "INSERT INTO privacy_release (reservation_id, run_id, dataset_id, epsilon_charged,"
                " epsilon_released, reason) VALUES (?,?,?,?,?,?)",
                [reservation.reservation_id, reservation.run_id, reservation.dataset_id, charged,
                 released, reason],
            )
            self.audit.append(
                cur, actor=self.actor, action=AuditAction.PRIVACY_RELEASE, object_type="dataset",
                object_id=reservation.dataset_id,
                details={"reservation_id": reservation.reservation_id,
                         "run_id": reservation.run_id, "epsilon_charged": charged,
                         "epsilon_released": released, "reason": reason},
            )
            return released

    def record_query(self, *, run_id: str, permit_id: str, dataset_id: str, kind: str,
                     round: int, weights_sha256: str) -> None:
        """Meter what a run asks of this dataset besides training, and bind it to the
        weights the run produced. Besides one answer per trained round, nothing:

        * `evaluate` round r: only for a round this node trained in, once;
        * `train-input` round r: the weights must be those evaluated for round r − 1,
          so a ServerApp that evaluated other weights than it sends on is caught;
        * `audit`, `calibrate` (the decision threshold's val rates): once per run each,
          on the weights of the run's last evaluation here.

        Raises QueryRefused (writing nothing) otherwise; each answer is audited."""
        if kind not in QUERY_KINDS:
            raise ValueError(f"query kind must be one of {QUERY_KINDS}")
        where = f"run {run_id} at dataset {dataset_id}"
        with self.db.transaction() as cur:
            def evaluated(rnd: int | None = None) -> tuple[int, str] | None:
                row = cur.execute(
                    "SELECT round, weights_sha256 FROM run_query WHERE run_id = ? AND "
                    "dataset_id = ? AND kind = 'evaluate' AND (? IS NULL OR round = ?) "
                    "ORDER BY round DESC LIMIT 1", [run_id, dataset_id, rnd, rnd]).fetchone()
                return (int(row[0]), str(row[1])) if row else None

            if cur.execute("SELECT count(*) FROM run_query WHERE run_id = ? AND dataset_id = ?"
                           " AND kind = ? AND round = ?",
                           [run_id, dataset_id, kind, round]).fetchone()[0]:
                raise QueryRefused("queries-exhausted", f"{where} already had its {kind} "
                                   + (f"of round {round}" if kind not in FINAL_KINDS
                                      else "") +
                                   ": one per trained round, one audit and one "
                                   "calibration per run")
            if kind == "evaluate" and not cur.execute(
                    "SELECT count(*) FROM privacy_charge WHERE run_id = ? AND dataset_id = ? "
                    "AND round = ?", [run_id, dataset_id, round]).fetchone()[0]:
                raise QueryRefused("weights-not-of-this-run", f"{where} trained in no round "
                                   f"{round}: there is no model of that round to evaluate")
            before = evaluated(round - 1) if kind == "train-input" else \
                evaluated() if kind in FINAL_KINDS else None
            if kind in FINAL_KINDS and before is None:
                raise QueryRefused("weights-not-of-this-run",
                                   f"{where} evaluated no model: nothing to {kind}")
            if before is not None and before[1] != weights_sha256:
                raise QueryRefused("weights-not-of-this-run", f"{where}: the weights sent for "
                                   f"the {kind} are not those evaluated in round {before[0]}")
            cur.execute(
                "INSERT INTO run_query (query_id, run_id, permit_id, dataset_id, kind, round,"
                " weights_sha256) VALUES (?,?,?,?,?,?,?)",
                [f"qry_{uuid.uuid4().hex[:16]}", run_id, permit_id, dataset_id, kind, round,
                 weights_sha256])
            self.audit.append(
                cur, actor=self.actor, action=AuditAction.QUERY_ANSWER, object_type="dataset",
                object_id=dataset_id,
                details={"run_id": run_id, "permit_id": permit_id, "kind": kind,
                         "round": round, "weights_sha256": weights_sha256})

    def snapshot(self) -> dict[str, list[tuple]]:
        """Every ledger row, for tests and audits that must show 'nothing changed'."""
        out = {}
        with self.db.reader() as cur:
            for table in ("privacy_budget", "privacy_reservation", "privacy_charge",
                          "privacy_release", "run_query"):
                out[table] = cur.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
        return out

    @staticmethod
    def _find(cur: duckdb.DuckDBPyConnection, run_id: str, permit_id: str,
              dataset_id: str) -> Reservation | None:
        row = cur.execute(
            f"SELECT {_RES_COLS} FROM privacy_reservation"
            " WHERE run_id = ? AND permit_id = ? AND dataset_id = ?",
            [run_id, permit_id, dataset_id],
        ).fetchone()
        return Reservation(*row) if row else None


def _total(cur: duckdb.DuckDBPyConnection, dataset_id: str) -> float | None:
    row = cur.execute(
        "SELECT epsilon_total FROM privacy_budget WHERE dataset_id = ? ORDER BY seq DESC LIMIT 1",
        [dataset_id],
    ).fetchone()
    return None if row is None else float(row[0])


def _charged(cur: duckdb.DuckDBPyConnection, reservation_id: str) -> float:
    return float(cur.execute(
        "SELECT coalesce(max(epsilon_run), 0) FROM privacy_charge WHERE reservation_id = ?",
        [reservation_id],
    ).fetchone()[0])


def _committed(cur: duckdb.DuckDBPyConnection, dataset_id: str,
               permit_id: str | None = None) -> float:
    """ε spent by closed runs plus ε held by open ones (reserved, or charged if more)."""
    sql = """
        SELECT r.epsilon,
               coalesce((SELECT max(c.epsilon_run) FROM privacy_charge c
                         WHERE c.reservation_id = r.reservation_id), 0) AS charged,
               EXISTS (SELECT 1 FROM privacy_release x
                       WHERE x.reservation_id = r.reservation_id) AS closed
        FROM privacy_reservation r WHERE r.dataset_id = ?
    """
    params: list[Any] = [dataset_id]
    if permit_id is not None:
        sql += " AND r.permit_id = ?"
        params.append(permit_id)
    rows = cur.execute(sql, params).fetchall()
    return float(sum(charged if closed else max(eps, charged) for eps, charged, closed in rows))


def _history(cur: duckdb.DuckDBPyConnection, reservation_id: str) -> list[tuple[float, float, int]]:
    return [
        (float(nm), float(q), int(steps))
        for nm, q, steps in cur.execute(
            "SELECT noise_multiplier, sample_rate, steps FROM privacy_charge"
            " WHERE reservation_id = ? ORDER BY round",
            [reservation_id],
        ).fetchall()
    ]


def _status(cur: duckdb.DuckDBPyConnection, dataset_id: str) -> BudgetStatus:
    total = _total(cur, dataset_id)
    spent = float(cur.execute(
        "SELECT coalesce(sum(m), 0) FROM (SELECT max(epsilon_run) AS m FROM privacy_charge"
        " WHERE dataset_id = ? GROUP BY reservation_id)", [dataset_id],
    ).fetchone()[0])
    committed = _committed(cur, dataset_id)
    active = cur.execute(
        "SELECT count(*) FROM privacy_reservation r WHERE dataset_id = ? AND NOT EXISTS"
        " (SELECT 1 FROM privacy_release x WHERE x.reservation_id = r.reservation_id)",
        [dataset_id],
    ).fetchone()[0]
    return BudgetStatus(
        dataset_id=dataset_id, epsilon_total=total, epsilon_spent=spent,
        epsilon_reserved=committed - spent,
        epsilon_remaining=None if total is None else total - committed, active_runs=int(active),
    )
