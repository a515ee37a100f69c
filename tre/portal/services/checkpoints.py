"""The audit checkpoints the portal keeps for every party, and its own.

A hospital node signs its chain head with its enrolled SuperNode key and sends it
here; the portal checks the signature against the key it registered at enrolment,
keeps the checkpoint in its store and in its own audit chain, and refuses (and
audits) one that does not verify, or that contradicts one already held for the same
row (a forked history). The portal signs its own head with its active permit key.
Checkpoints hold no personal data: anyone may read them, and an auditor verifies a
log against them (`tre audit verify --checkpoints`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization

from access_control.tokens import Principal
from tre.core.checkpoints import Checkpoint, CheckpointError
from tre.portal.context import Portal, utcnow
from tre.portal.errors import Conflict, Forbidden, Invalid
from tre.portal.schemas import CheckpointIn
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
        raise Conflict(f"{party} has no enrolled node key to check its checkpoints with: "
                       "enrol its key first (`tre node serve --secure` does)")
    try:
        checkpoint.verify(serialization.load_ssh_public_key(node["public_key"].encode()))
        if held is not None and held["hash"] != checkpoint.hash:
            raise CheckpointError(f"{party} already signed row {checkpoint.seq} with another "
                                  f"hash on {held['at']}: its history forked")
    except CheckpointError as exc:
        with portal.db.transaction() as cur:
            portal.audit.append(cur, actor=principal.username, action="audit.checkpoint_refused",
                                object_type="node", object_id=party,
                                details={"seq": checkpoint.seq, "reason": str(exc)})
        raise Invalid(str(exc)) from exc
    if held is not None:
        return checkpoint.as_dict()  # the same head again: nothing new to keep
    with portal.db.transaction() as cur:
        store.insert(cur, checkpoint.as_dict(), node["public_key"], utcnow())
        portal.audit.append(cur, actor=principal.username, action="audit.checkpoint",
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
