"""Signed checkpoints: the chain heads another party has seen.

A hash chain shows an edited, deleted, inserted or reordered row, but not the two
attacks an auditor fears most: a log cut short at its tail, or a whole chain
rewritten with fresh hashes. Both verify, because nobody else ever saw the head. A
checkpoint is a party's head (sequence number, hash, time) signed with that party's
key (a node's enrolled SuperNode key, the portal's permit key) and kept by someone
else. A log is then checked against every checkpoint it must contain:

* a checkpoint beyond the log's last row: the tail was cut;
* a row whose hash differs from the checkpoint's: the chain was rewritten, or the
  history forked after the checkpoint was signed.

Each finding names the checkpoint it contradicts. For a remote audit a party signs
its whole exported log with the same key (`SignedExport`), so that a copy relayed by
someone else is known to be the one it sent.
"""

from __future__ import annotations

import base64
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tre.core.audit import AuditEntry, VerifyResult, canonical_json, parse_jsonl, verify_entries

SigningKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class CheckpointError(Exception):
    """A checkpoint whose signature does not verify with the party's key."""


def sign(key: SigningKey, payload: bytes) -> str:
    """A base64 signature of `payload` (ECDSA with SHA-256 for EC keys, else Ed25519)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        raw = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    else:
        raw = key.sign(payload)
    return base64.b64encode(raw).decode()


def signature_valid(key: PublicKey, signature: str, payload: bytes) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(raw, payload, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(raw, payload)
    except (InvalidSignature, ValueError):
        return False
    return True


class _SignedByParty(ABC):
    """What a party signs with its key: `payload()` is signed, `described()` names it."""

    party: str
    signature: str

    @abstractmethod
    def payload(self) -> bytes: ...

    @abstractmethod
    def described(self) -> str: ...

    def signed(self, key: SigningKey) -> Self:
        return replace(self, signature=sign(key, self.payload()))  # type: ignore[type-var]

    def verify(self, key: PublicKey) -> Self:
        """Itself, or CheckpointError naming what is not signed by whom."""
        if not signature_valid(key, self.signature, self.payload()):
            raise CheckpointError(f"{self.described()} is not signed by {self.party}'s key")
        return self


@dataclass(frozen=True)
class Checkpoint(_SignedByParty):
    party: str
    seq: int
    hash: str
    at: str
    signature: str = ""

    def payload(self) -> bytes:
        """What is signed: everything but the signature, as canonical JSON."""
        return canonical_json({"party": self.party, "seq": self.seq, "hash": self.hash,
                               "at": self.at}).encode()

    def described(self) -> str:
        return f"the checkpoint of {self.party} at row {self.seq} ({self.at})"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SignedExport(_SignedByParty):
    """A party's whole log as JSON Lines, signed with the same key as its checkpoints, so
    that the copy an auditor fetches through the portal is the one the party sent (the
    portal relays it, it cannot have edited it). Audit rows only: they carry no records."""

    party: str
    jsonl: str
    signature: str = ""

    def sha256(self) -> str:
        return hashlib.sha256(self.jsonl.encode()).hexdigest()

    def payload(self) -> bytes:
        """The party and the digest of the lines: an export cannot pass as another party's."""
        return canonical_json({"party": self.party, "sha256": self.sha256()}).encode()

    def described(self) -> str:
        return f"the audit export of {self.party} (sha256 {self.sha256()[:12]}…)"

    def entries(self) -> list[AuditEntry]:
        return list(parse_jsonl(self.jsonl.splitlines()))


def verify_against(entries: Iterable[AuditEntry], checkpoints: Iterable[Checkpoint]
                   ) -> VerifyResult:
    """The chain's own check, then every checkpoint: the first contradiction found."""
    rows = list(entries)
    result = verify_entries(rows)
    if not result.ok:
        return result
    by_seq = {e.seq: e for e in rows}
    last = rows[-1].seq if rows else 0
    agreed = None
    for cp in sorted(checkpoints, key=lambda c: c.seq):
        if cp.seq == 0:
            continue
        if cp.seq > last:
            return VerifyResult(False, len(rows), result.head_hash, last + 1,
                                f"the log ends at row {last}, but {cp.party} signed a "
                                f"checkpoint at row {cp.seq} on {cp.at}: its tail was cut",
                                cp.seq)
        if by_seq[cp.seq].hash != cp.hash:
            return VerifyResult(False, len(rows), result.head_hash, cp.seq,
                                f"row {cp.seq} is not the row {cp.party} signed in its "
                                f"checkpoint of {cp.at}: the chain was rewritten or its "
                                "history forked", cp.seq)
        agreed = cp.seq
    return replace(result, checkpoint_seq=agreed)
