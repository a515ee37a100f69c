"""A person's own view (issue 14): their consents with history, consent given or
withdrawn per purpose, their receipts, and the runs that used their records.

Every function starts from the caller's pseudonym (`tre.portal.citizens`, derived
from the identifier in their token), never from a parameter: a citizen reads the
consents whose subject is their pseudonym, whichever organisation recorded them, and
nothing else; another person's consent id answers 404, as a missing one does.

What a person states themself is recorded per purpose, one consent per purpose under
the organisation `<citizen_organisation>:<purpose>` (e.g. `self:ai_training`): the
registry keeps one consent per organisation and subject, with one status, and a
person may well give one purpose and withdraw another. Nodes then apply their usual
rule to these rows as to any organisation's: a withdrawal covering a purpose wins over
any consent for it, from anyone, so a person's withdrawal always takes effect, and
their consent does not override a withdrawal an organisation recorded for them.
Changes are audited like a steward's (`consent.record|update|withdraw|reconsent`,
source `citizen`); the actor is `citizen:<pseudonym>`, so no username a national
IdP may have chosen is ever stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from access_control.tokens import Principal
from tre.core.run_members import member_tag
from tre.core.schemas import ConsentStatus, Purpose
from tre.portal.consent_schemas import Consent, MyRun, MyRuns
from tre.portal.context import Portal
from tre.portal.errors import Conflict, NotFound
from tre.portal.services import consent_receipts
from tre.portal.services.consent_registry import apply_change, to_model
from tre.portal.store import access as access_store
from tre.portal.store import consent as store
from tre.portal.store import participation
from tre.portal.store import runs as run_store

SOURCE = "citizen"
MAX_CONSENTS = 1000  # a person's consents across every organisation: a handful in practice


def own_organisation(portal: Portal, purpose: Purpose) -> str:
    """Where a person's own statement about one purpose is recorded."""
    return f"{portal.settings.citizen_organisation}:{Purpose(purpose).value}"


def my_consents(portal: Portal, principal: Principal) -> dict[str, Any]:
    """Every consent of the caller, each with its full history."""
    subject = portal.citizens.of(principal)
    with portal.db.reader() as cur:
        rows, _ = store.list_consents(cur, subject=subject, limit=MAX_CONSENTS)
        items = [to_model(cur, r, with_history=True) for r in rows]
    return {"subject": subject, "items": items}


def set_purpose(portal: Portal, principal: Principal, purpose: Purpose, status: ConsentStatus,
                reason: str | None = None) -> Consent:
    """Give (`active`) or withdraw (`withdrawn`) consent for one purpose, in the
    person's own name; one new version, audited in the same transaction."""
    subject = portal.citizens.of(principal)
    organisation = own_organisation(portal, purpose)
    status = ConsentStatus(status)
    with portal.db.transaction() as cur:
        current = store.find_consent(cur, organisation, subject)
        if current is not None and current["status"] == status.value:
            raise Conflict(f"your {Purpose(purpose).value} consent is already {status.value} "
                           f"(version {current['version']})")
        row = apply_change(portal, cur, f"citizen:{subject}", {
            "consent_id": current["consent_id"] if current else None,
            "organisation": organisation, "subject": subject,
            "purposes": [Purpose(purpose).value], "status": status.value,
            "valid_from": None, "valid_to": None, "note": reason,
        }, source=SOURCE, reason=reason)
        return to_model(cur, row, with_history=True)


def _own(subject: str, cid: str) -> Callable[[dict[str, Any] | None], dict[str, Any]]:
    """The access rule of a person's receipts: their own consents only."""

    def readable(row: dict[str, Any] | None) -> dict[str, Any]:
        if row is None or row["subject"] != subject:
            raise NotFound(f"consent {cid} does not exist")
        return row

    return readable


def receipt(portal: Portal, principal: Principal, cid: str, version: int | None = None
            ) -> dict[str, Any]:
    """The receipt of one of the caller's consents (any organisation's)."""
    subject = portal.citizens.of(principal)
    return consent_receipts.receipt_of(portal, _own(subject, cid), cid, version)


def my_runs(portal: Portal, principal: Principal) -> MyRuns:
    """The runs whose nodes reported the caller's tag (`services.participation`), newest
    first, with what the transparency register shows of their permit: never anyone
    else's membership, never a cohort."""
    subject = portal.citizens.of(principal)
    items = []
    with portal.db.reader() as cur:
        tags = {r: member_tag(f"flwr-{r}", subject) for r in participation.reported_runs(cur)}
        for flower_run_id, hospitals in participation.hospitals_with(cur, tags).items():
            run = run_store.get_run_by_flower_id(cur, flower_run_id)
            permit = access_store.get_permit(cur, run["permit_id"]) if run else None
            request = access_store.get_request(cur, permit["request_id"]) if permit else None
            if request is None:
                continue
            items.append(MyRun(run_id=run["id"], permit_id=permit["id"], title=request["title"],
                               organisation=request["organisation"],
                               purpose=permit["claims"]["purpose"], started_at=run["created_at"],
                               state=run["state"], hospitals=hospitals))
    return MyRuns(items=sorted(items, key=lambda r: r.started_at, reverse=True))
