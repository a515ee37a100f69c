"""The audit checkpoints the portal keeps for every party, and its own.

A hospital node signs its chain head with its enrolled SuperNode key and sends it
here; the portal checks the signature against the key it registered at enrolment,
keeps the checkpoint in its store and in its own audit chain, and refuses (and
audits) one that does not verify, or that contradicts one already held for the same
row (a forked history). The portal signs its own head with its active permit key.
Checkpoints hold no personal data: anyone may read them, and an auditor verifies a
log against them (`tre audit verify --checkpoints`).

For a remote audit a node uploads its whole log, signed with the same key
(`tre node audit export --upload`); the portal keeps it for auditors only, and an
auditor checks it against the checkpoints held here and records the result, which
the transparency register publishes (`tre audit verify --portal URL --party P`).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization

from access_control.tokens import Principal
from tre.core.audit import AuditAction
from tre.core.checkpoints import Checkpoint, CheckpointError, SignedExport
from tre.portal.context import Portal, utcnow
from tre.portal.errors import Conflict, Forbidden, Invalid, NotFound
from tre.portal.schemas import AuditExportIn, CheckpointIn, VerificationIn
from tre.portal.store import checkpoints as store
from tre.portal.store import nodes as node_store

PORTAL = "portal"


def receive(portal: Portal, principal: Principal, body: CheckpointIn) -> dict[str, Any]:
    """A node's signed head, for its own hospital only."""
    party = principal.hospital_id
    if not party:
        raise Forbidden("only a hospital's node service account sends its checkpoints")
    checkpoint = Checkpoint(party=party, **body.model_dump())
    with portal.db.reader() as cur:
        node = node_store.get_node(cur, party)
        held = store.at_seq(cur, party, checkpoint.seq)
    if node is None:
        raise Conflict(_not_enrolled(party, "checkpoints"))
    try:
        checkpoint.verify(_node_key(node))
        if held is not None and held["hash"] != checkpoint.hash:
            raise CheckpointError(f"{party} already signed row {checkpoint.seq} with another "
                                  f"hash on {held['at']}: its history forked")
    except CheckpointError as exc:
        with portal.db.transaction() as cur:
            portal.audit.append(cur, actor=principal.username,
                                action=AuditAction.AUDIT_CHECKPOINT_REFUSED,
                                object_type="node", object_id=party,
                                details={"seq": checkpoint.seq, "reason": str(exc)})
        raise Invalid(str(exc)) from exc
    if held is not None:
        return checkpoint.as_dict()  # the same head again: nothing new to keep
    with portal.db.transaction() as cur:
        store.insert(cur, checkpoint.as_dict(), node["public_key"], utcnow())
        portal.audit.append(cur, actor=principal.username, action=AuditAction.AUDIT_CHECKPOINT,
                            object_type="node", object_id=party,
                            details={"seq": checkpoint.seq, "hash": checkpoint.hash})
    sign_own(portal)  # the node's checkpoint is now in the portal's chain: sign that too
    return checkpoint.as_dict()


def sign_own(portal: Portal) -> dict[str, Any]:
    """The portal's own head, signed with its active permit key and kept with the rest
    (not as a row of its own chain, which would move the head it signs)."""
    key = portal.keys.active_key()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    at = datetime.now(UTC).isoformat(timespec="seconds")
    with portal.db.transaction() as cur:
        checkpoint = Checkpoint(PORTAL, *portal.audit.head(cur), at).signed(key)
        if store.at_seq(cur, PORTAL, checkpoint.seq) is None:
            store.insert(cur, checkpoint.as_dict(), public, utcnow())
    return checkpoint.as_dict()


def latest(portal: Portal) -> list[dict[str, Any]]:
    """Each party's newest checkpoint and the key to verify it with (public)."""
    with portal.db.reader() as cur:
        return store.latest(cur)


def of_party(portal: Portal, party: str) -> list[dict[str, Any]]:
    with portal.db.reader() as cur:
        return store.of_party(cur, party)


def _not_enrolled(party: str, what: str) -> str:
    return (f"{party} has no enrolled node key to check its {what} with: "
            "enrol its key first (`tre node serve --secure` does)")


def _node_key(node: dict[str, Any]) -> Any:
    return serialization.load_ssh_public_key(node["public_key"].encode())


def receive_export(portal: Portal, principal: Principal, party: str,
                   body: AuditExportIn) -> dict[str, Any]:
    """A node's signed log, for its own hospital only, kept for auditors. One signed by
    another key is refused and audited; one whose chain is broken is kept: finding
    that is the auditor's job, and the evidence must not be turned away."""
    if principal.hospital_id != party:
        raise Forbidden(f"this node's service account belongs to {principal.hospital_id!r}: "
                        f"it cannot upload the audit log of {party!r}")
    export = SignedExport(party, body.jsonl, body.signature)
    try:
        rows = len(export.entries())
    except (ValueError, TypeError) as exc:
        raise Invalid(f"the export is not JSON lines of audit rows: {exc}") from exc
    with portal.db.reader() as cur:
        node = node_store.get_node(cur, party)
    if node is None:
        raise Conflict(_not_enrolled(party, "audit export"))
    try:
        export.verify(_node_key(node))
    except CheckpointError as exc:
        with portal.db.transaction() as cur:
            portal.audit.append(cur, actor=principal.username,
                                action=AuditAction.AUDIT_EXPORT_REFUSED,
                                object_type="node", object_id=party,
                                details={"sha256": export.sha256(), "reason": str(exc)})
        raise Invalid(str(exc)) from exc
    row = {"party": party, "uploaded_at": utcnow(), "uploaded_by": principal.username,
           "row_count": rows, "sha256": export.sha256(), "signature": export.signature,
           "jsonl": export.jsonl}
    with portal.db.transaction() as cur:
        store.insert_export(cur, row)
        portal.audit.append(cur, actor=principal.username, action=AuditAction.AUDIT_EXPORT_UPLOAD,
                            object_type="node", object_id=party,
                            details={"rows": rows, "sha256": export.sha256()})
    return {k: v for k, v in row.items() if k not in ("jsonl", "signature")}


def export_of(portal: Portal, principal: Principal, party: str) -> dict[str, Any]:
    """The newest log a node uploaded, with the key it must verify with; the read is
    audited (who looked at which hospital's log, and when)."""
    with portal.db.transaction() as cur:
        row = store.latest_export(cur, party)
        if row is None:
            raise NotFound(f"{party} has not uploaded its audit log: its operator runs "
                           "`tre node audit export --upload`")
        node = node_store.get_node(cur, party)
        portal.audit.append(cur, actor=principal.username, action=AuditAction.AUDIT_EXPORT_READ,
                            object_type="node", object_id=party,
                            details={"sha256": row["sha256"]})
    return {**row, "public_key": node["public_key"] if node else None}


def record_verification(portal: Portal, principal: Principal,
                        body: VerificationIn) -> dict[str, Any]:
    """An auditor's independent result, kept and published in the register; only for a
    party whose checkpoints the portal holds (what the log was verified against)."""
    row = {"id": str(uuid.uuid4()), **body.model_dump(exclude={"rows"}),
           "row_count": body.rows, "verified_by": principal.username,
           "verified_at": utcnow()}
    with portal.db.transaction() as cur:
        if not store.of_party(cur, body.party):
            raise Conflict(f"the portal holds no checkpoint of {body.party}: there is nothing "
                           "its log could have been verified against")
        store.insert_verification(cur, row)
        portal.audit.append(cur, actor=principal.username, action=AuditAction.AUDIT_VERIFICATION,
                            object_type="party", object_id=body.party,
                            details={"ok": body.ok, "rows": body.rows,
                                     "checkpoint_seq": body.checkpoint_seq})
    return row


def latest_verifications(portal: Portal) -> list[dict[str, Any]]:
    """Each party's newest independent verification (public: the auditor's name is kept
    in the store and the audit log, not published)."""
    with portal.db.reader() as cur:
        rows = store.latest_verifications(cur)
    return [{k: v for k, v in row.items() if k != "verified_by"} for row in rows]


def audit_status(portal: Portal) -> list[dict[str, Any]]:
    """Per party, the newest checkpoint and the newest independent verification (either
    may be missing): what the transparency register and `/metrics` publish."""
    with portal.db.reader() as cur:
        heads = {c["party"]: c for c in store.latest(cur)}
        checks = {v["party"]: v for v in store.latest_verifications(cur)}
    return [{"party": party,
             "checkpoint": ({k: heads[party][k] for k in ("seq", "hash", "at")}
                            if party in heads else None),
             "verification": ({k: v for k, v in checks[party].items()
                               if k not in ("id", "party", "verified_by")}
                              if party in checks else None)}
            for party in sorted(heads.keys() | checks.keys())]
