"""Consent receipts: what a data subject keeps of a consent (DGA Art. 25, GDPR Art. 7).

A receipt is one version of a consent as the registry recorded it, with the audit
entry that anchors it in the hash chain and a digest over the whole, so that the
subject can later show what they agreed to and when.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from access_control.tokens import Principal
from tre.core.audit import canonical_json
from tre.core.schemas import ConsentStatus, Purpose
from tre.portal.consent_schemas import PURPOSE_LABELS
from tre.portal.context import Portal
from tre.portal.errors import NotFound
from tre.portal.services.consent_registry import check_readable
from tre.portal.store import consent as store

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def receipt(portal: Portal, principal: Principal, cid: str, version: int | None = None
            ) -> dict[str, Any]:
    """A receipt as the steward's organisation (or an auditor) reads it."""
    return receipt_of(portal, lambda row: check_readable(principal, row, cid), cid, version)


def receipt_of(portal: Portal, readable: Callable[[dict[str, Any] | None], dict[str, Any]],
               cid: str, version: int | None = None) -> dict[str, Any]:
    """What the subject keeps: the consent as recorded, anchored in the audit chain.
    `readable` is the caller's access rule: the row back, or NotFound."""
    with portal.db.reader() as cur:
        row = readable(store.get_consent(cur, cid))
        v = store.get_version(cur, cid, version or row["version"])
        if v is None:
            raise NotFound(f"consent {cid} has no version {version}")
    audit = None
    if v["audit_seq"] is not None:
        found = portal.audit.entries(after_seq=v["audit_seq"] - 1, limit=1)
        if found:
            e = found[0]
            audit = {"seq": e.seq, "action": e.action, "ts": e.ts, "hash": e.hash}
    body = {
        "receipt_id": f"{cid}-v{v['version']}",
        "consent_id": cid,
        "version": v["version"],
        "latest_version": row["version"],
        "subject": v["subject"],
        "organisation": v["organisation"],
        "status": v["status"],
        "change": v["change"],
        "purposes": [{"code": p, "label": PURPOSE_LABELS[Purpose(p)]} for p in v["purposes"]],
        "valid_from": v["valid_from"].isoformat() if v["valid_from"] else None,
        "valid_to": v["valid_to"].isoformat() if v["valid_to"] else None,
        "recorded_at": v["recorded_at"].isoformat(),
        "recorded_by": v["recorded_by"],
        "registry_version": v["registry_version"],
        "audit": audit,
        "statement": _statement(v),
        "how_to_withdraw": (
            f"You can withdraw at any time, free of charge, through {v['organisation']}. "
            "A withdrawal reaches every hospital node before its next run or query; data "
            "already used in finished analyses cannot be taken back out of them."
        ),
        "legal_basis": "Regulation (EU) 2022/868 (Data Governance Act), Art. 25; "
                       "GDPR Art. 6(1)(a), 9(2)(a), 7(3)",
    }
    body["digest"] = hashlib.sha256(canonical_json(body).encode()).hexdigest()
    return body


def _statement(v: dict[str, Any]) -> str:
    names = "; ".join(PURPOSE_LABELS[Purpose(p)] for p in v["purposes"])
    if v["status"] == ConsentStatus.WITHDRAWN:
        return (f"The data subject has withdrawn consent (or objects) to the use of their "
                f"health data for: {names}.")
    period = ""
    if v["valid_from"] or v["valid_to"]:
        period = (f" from {v['valid_from'] or 'the date of recording'}"
                  f" until {v['valid_to'] or 'withdrawn'}")
    return (f"The data subject consents to the use of their pseudonymised health data, "
            f"without it leaving the hospitals, for: {names}{period}.")


def receipt_html(portal: Portal, principal: Principal, cid: str, version: int | None = None
                 ) -> str:
    return as_html(receipt(portal, principal, cid, version))


def as_html(data: dict[str, Any]) -> str:
    """The receipt as a printable page, for a subject without a JSON viewer."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    return env.get_template("consent_receipt.html").render(r=data)
