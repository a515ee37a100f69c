"""Permits, feasibility tickets and run tickets: JWS (EdDSA / Ed25519) signed by the
portal, verified by nodes.

The portal holds a key ring (one active signing key, older keys kept for
verification until their permits expire, compromised keys retired: their private
half deleted, their key id published as retired); nodes pin the public JWKS at
enrolment, follow it (`federation.node.permit_keys`), and refuse anything not signed
by a pinned key, signed by a retired one, not yet valid, expired or revoked.
The JWS `typ` keeps the three apart: a permit is never taken for a ticket, nor the
reverse.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from jwcrypto import jwk, jws
from jwcrypto.common import JWException
from pydantic import BaseModel, ValidationError

from tre.core.schemas import FeasibilityTicket, PermitClaims, RunTicket

PERMIT_ALG = "EdDSA"
PERMIT_TYPE = "tre-permit+jwt"
TICKET_TYPE = "tre-feasibility+jwt"
RUN_TICKET_TYPE = "tre-run+jwt"
CLOCK_SKEW_S = 30
C = TypeVar("C", bound=BaseModel)


class PermitError(Exception):
    """A permit failed verification; the message says why (shown to operators)."""


class PermitKeyRing:
    """The portal's signing keys. Stored as a private JWKS file readable only by its owner."""

    def __init__(self, path: Path, keys: list[jwk.JWK], active_kid: str,
                 retired: dict[str, str] | None = None) -> None:
        self.path = path
        self._keys = {k.key_id: k for k in keys}
        self.active_kid = active_kid
        self.retired = dict(retired or {})  # kid -> when (ISO 8601)

    @classmethod
    def load_or_create(cls, path: str | Path) -> PermitKeyRing:
        path = Path(path)
        if path.exists():
            data = json.loads(path.read_text())
            keys = [jwk.JWK(**k) for k in data["keys"]]
            return cls(path, keys, data["active_kid"], data.get("retired"))
        ring = cls(path, [], "")
        ring.rotate()
        return ring

    def rotate(self) -> str:
        """Add a new active key; earlier keys stay for verifying permits they signed."""
        key = jwk.JWK.generate(kty="OKP", crv="Ed25519", kid=f"permit-{uuid.uuid4().hex[:12]}")
        self._keys[key.key_id] = key
        self.active_kid = key.key_id
        self._save()
        return key.key_id

    def retire(self, kid: str) -> str | None:
        """Retire a (compromised) key: its private half is deleted and its id published as
        retired, so nodes refuse whatever it signed. Retiring the active key first makes a
        new one active; returns that new key id, if any."""
        if kid not in self._keys:
            raise KeyError(kid)
        new = self.rotate() if kid == self.active_kid else None
        del self._keys[kid]
        self.retired[kid] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._save()
        return new

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        data = {
            "active_kid": self.active_kid,
            "keys": [json.loads(k.export_private()) for k in self._keys.values()],
            "retired": self.retired,
        }
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self.path)

    def public_jwks(self) -> dict[str, Any]:
        """The keys nodes verify with, and (member `retired`, which JWKS readers that do not
        know it ignore) the ids of keys whose signatures must be refused."""
        return {"keys": [json.loads(k.export_public()) for k in self._keys.values()],
                "retired": sorted(self.retired)}

    def active_key(self) -> Any:
        """The active key as a `cryptography` Ed25519 private key (for signatures that
        are not JWS, such as the portal's audit checkpoints)."""
        return self._keys[self.active_kid].get_op_key("sign")

    def sign(self, claims: PermitClaims) -> str:
        return self._sign(claims, PERMIT_TYPE)

    def sign_ticket(self, ticket: FeasibilityTicket) -> str:
        return self._sign(ticket, TICKET_TYPE)

    def sign_run_ticket(self, ticket: RunTicket) -> str:
        return self._sign(ticket, RUN_TICKET_TYPE)

    def _sign(self, claims: BaseModel, typ: str) -> str:
        token = jws.JWS(claims.model_dump_json().encode())
        token.add_signature(
            self._keys[self.active_kid],
            alg=PERMIT_ALG,
            protected={"alg": PERMIT_ALG, "kid": self.active_kid, "typ": typ},
        )
        return token.serialize(compact=True)


def _verified_payload(token: str, jwks: dict[str, Any], typ: str, what: str) -> bytes:
    """The payload of a JWS of type `typ` signed by one of the pinned keys (EdDSA only)."""
    try:
        parsed = jws.JWS()
        parsed.deserialize(token)
        header = parsed.jose_header
    except (JWException, ValueError, TypeError) as exc:
        raise PermitError(f"{what} is not a well-formed JWS: {exc}") from exc
    if header.get("alg") != PERMIT_ALG:
        raise PermitError(f"{what} algorithm {header.get('alg')!r} is not {PERMIT_ALG}")
    if header.get("typ") != typ:
        raise PermitError(f"{what} has type {header.get('typ')!r}, not {typ!r}")
    keyset = jwk.JWKSet.from_json(json.dumps(jwks))
    key = keyset.get_key(header.get("kid", ""))
    if key is None:
        raise PermitError(f"{what} signed by unknown key {header.get('kid')!r}")
    try:
        parsed.verify(key, alg=PERMIT_ALG)
    except JWException as exc:
        raise PermitError(f"{what} signature does not verify with the pinned portal key") from exc
    return parsed.payload


def _check_window(nbf: int, exp: int, now: float | None, what: str) -> None:
    now = time.time() if now is None else now
    if now + CLOCK_SKEW_S < nbf:
        raise PermitError(f"{what} is not valid yet")
    if now - CLOCK_SKEW_S >= exp:
        raise PermitError(f"{what} has expired")


def _claims(token: str, jwks: dict[str, Any], typ: str, model: type[C], what: str) -> C:
    """The verified payload of a JWS of type `typ`, as `model`; PermitError otherwise."""
    payload = _verified_payload(token, jwks, typ, what)
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        raise PermitError(f"{what} claims are invalid: {exc.errors()[0]['msg']}") from exc


def verify_permit(
    token: str,
    jwks: dict[str, Any],
    *,
    revoked: Iterable[str] = (),
    now: float | None = None,
) -> PermitClaims:
    """Check signature (pinned keys, EdDSA only), validity window and revocation."""
    claims = _claims(token, jwks, PERMIT_TYPE, PermitClaims, "permit")
    _check_window(claims.nbf, claims.exp, now, f"permit {claims.permit_id}")
    if claims.permit_id in set(revoked):
        raise PermitError(f"permit {claims.permit_id} has been revoked")
    return claims


def verify_ticket(token: str, jwks: dict[str, Any], *, now: float | None = None,
                  ) -> FeasibilityTicket:
    """Check a feasibility ticket's signature (pinned keys) and validity window."""
    ticket = _claims(token, jwks, TICKET_TYPE, FeasibilityTicket, "feasibility ticket")
    _check_window(ticket.nbf, ticket.exp, now, f"feasibility ticket {ticket.ticket_id}")
    return ticket


def verify_run_ticket(token: str, jwks: dict[str, Any], *, now: float | None = None
                      ) -> RunTicket:
    """Check a run ticket's signature (pinned keys) and validity window."""
    ticket = _claims(token, jwks, RUN_TICKET_TYPE, RunTicket, "run ticket")
    _check_window(ticket.nbf, ticket.exp, now, f"run ticket {ticket.ticket_id}")
    return ticket


def signing_kid(token: str) -> str:
    """The key id a JWS names in its protected header (not verified: to pick the key)."""
    try:
        parsed = jws.JWS()
        parsed.deserialize(token)
        kid = parsed.jose_header.get("kid")
    except (JWException, ValueError, TypeError) as exc:
        raise PermitError(f"not a well-formed JWS: {exc}") from exc
    if not isinstance(kid, str) or not kid:
        raise PermitError("the JWS names no key id (kid)")
    return kid


def unverified_claims(token: str) -> dict[str, Any]:
    """Claims without checking anything: only for display, never for decisions."""
    parsed = jws.JWS()
    parsed.deserialize(token)
    return json.loads(parsed.objects["payload"])
