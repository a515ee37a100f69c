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

Each finding names the checkpoint it contradicts.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tre.core.audit import AuditEntry, VerifyResult, canonical_json, verify_entries

SigningKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class CheckpointError(Exception):
    """A checkpoint whose signature does not verify with the party's key."""


@dataclass(frozen=True)
class Checkpoint:
    party: str
    seq: int
    hash: str
    at: str
    signature: str = ""

    def payload(self) -> bytes:
        """What is signed: everything but the signature, as canonical JSON."""
        return canonical_json({"party": self.party, "seq": self.seq, "hash": self.hash,
                               "at": self.at}).encode()

    def signed(self, key: SigningKey) -> Checkpoint:
        if isinstance(key, ec.EllipticCurvePrivateKey):
            raw = key.sign(self.payload(), ec.ECDSA(hashes.SHA256()))
        else:
            raw = key.sign(self.payload())
        return replace(self, signature=base64.b64encode(raw).decode())

    def verify(self, key: PublicKey) -> Checkpoint:
        """The checkpoint itself, or CheckpointError naming it."""
        try:
            raw = base64.b64decode(self.signature, validate=True)
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(raw, self.payload(), ec.ECDSA(hashes.SHA256()))
            else:
                key.verify(raw, self.payload())
        except (InvalidSignature, ValueError) as exc:
            raise CheckpointError(f"the checkpoint of {self.party} at row {self.seq} "
                                  f"({self.at}) is not signed by {self.party}'s key") from exc
        return self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_against(entries: Iterable[AuditEntry], checkpoints: Iterable[Checkpoint]
                   ) -> VerifyResult:
    """The chain's own check, then every checkpoint: the first contradiction found."""
    rows = list(entries)
    result = verify_entries(rows)
    if not result.ok:
        return result
    by_seq = {e.seq: e for e in rows}
    last = rows[-1].seq if rows else 0
    for cp in sorted(checkpoints, key=lambda c: c.seq):
        if cp.seq == 0:
            continue
        if cp.seq > last:
            return VerifyResult(False, len(rows), result.head_hash, last + 1,
                                f"the log ends at row {last}, but {cp.party} signed a "
                                f"checkpoint at row {cp.seq} on {cp.at}: its tail was cut")
        if by_seq[cp.seq].hash != cp.hash:
            return VerifyResult(False, len(rows), result.head_hash, cp.seq,
                                f"row {cp.seq} is not the row {cp.party} signed in its "
                                f"checkpoint of {cp.at}: the chain was rewritten or its "
                                "history forked")
    return result
