"""Settle what an interrupted run left open in the node's ε ledger.

A node killed mid-round never gets the ServerApp's `close` message, so its
reservation stays open and keeps holding budget. Settlement is conservative: a
round is charged *before* its data is read (`federation.node.gate.Budget.charge`), so
every round that may have touched data, the interrupted one included, is already
charged in full and stays charged, even though its update never left the node.
What was reserved beyond that is released, with the reason recorded in the
ledger and the node audit log. It runs when the SuperNode starts (`serve`), so
the node rejoins the next run with its budget accounted for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from federation.node.home import node_session
from federation.node.ledger import PrivacyLedger, Reservation
from tre.core.audit import AuditAction

REASON = "interrupted: node restarted before the run closed; charged rounds kept"


def open_reservations(ledger: PrivacyLedger) -> list[Reservation]:
    with ledger.db.reader() as cur:
        rows = cur.execute(
            "SELECT reservation_id, run_id, permit_id, dataset_id, epsilon, delta, accountant,"
            " noise_multiplier, sample_rate, steps_per_round, rounds, max_grad_norm"
            " FROM privacy_reservation r WHERE NOT EXISTS (SELECT 1 FROM privacy_release x"
            " WHERE x.reservation_id = r.reservation_id) ORDER BY created_at").fetchall()
    return [Reservation(*r) for r in rows]


def settle_interrupted(home_path: str | Path) -> list[dict[str, Any]]:
    """Close every open reservation of the node (call only while no run uses the node,
    i.e. before its SuperNode starts); returns what was settled, audited."""
    settled = []
    with node_session(home_path) as home:
        ledger = PrivacyLedger(home.db, home.audit, actor=home.actor)
        for res in open_reservations(ledger):
            charged = max((c["epsilon_run"] for c in ledger.charges(run_id=res.run_id,
                                                                    dataset_id=res.dataset_id)),
                          default=0.0)
            released = ledger.release(res, reason=REASON)
            row = {"run_id": res.run_id, "permit_id": res.permit_id,
                   "dataset_id": res.dataset_id, "epsilon_reserved": res.epsilon,
                   "epsilon_charged": charged, "epsilon_released": released}
            home.audit.record(actor=home.actor, action=AuditAction.PRIVACY_SETTLE_INTERRUPTED,
                              object_type="dataset", object_id=res.dataset_id, details=row)
            settled.append(row)
    return settled
