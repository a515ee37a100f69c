"""The portal's permit keys as a node follows them: rotation without re-initialising,
retirement honoured at once.

A node pins the portal's key set at `tre node init`. When a permit or ticket names a
key id the node has not pinned (the portal rotated), the node fetches the set again
from its portal, over TLS checked against the CA pinned at init, and pins it;
nothing else can add a key. A key the portal retired (compromised) is dropped from
the pinned set the next time the node hears of it (with every revocation list), and
whatever it signed is refused with `permit-key-retired`. Each change to the pinned
set is audited.
"""

from __future__ import annotations

from typing import Any

from access_control.permits import signing_kid
from federation.node.home import NodeHome, NodeHomeError
from federation.node.portal_client import PortalClient, PortalError
from tre.core.audit import AuditAction


class KeyRefused(Exception):
    """No usable key for this signature; `code` is the node's refusal code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _kids(jwks: dict[str, Any]) -> set[str]:
    return {k.get("kid") for k in jwks.get("keys", [])}


def refresh(home: NodeHome, *, reason: str) -> dict[str, Any]:
    """Fetch the portal's key set, pin it and audit what changed; PortalError if the
    portal cannot be reached or sends no valid key set."""
    fresh = PortalClient.for_home(home).permit_keys()
    try:
        pinned = home.permit_jwks()
    except NodeHomeError:
        pinned = {"keys": []}
    added, dropped = sorted(_kids(fresh) - _kids(pinned)), sorted(_kids(pinned) - _kids(fresh))
    newly_retired = sorted(set(fresh["retired"]) - set(pinned.get("retired", [])))
    if added or dropped or newly_retired:
        home.pin_permit_keys(fresh)
        home.audit.record(actor=home.actor, action=AuditAction.PERMIT_KEY_REFRESH,
                          object_type="node",
                          object_id=home.config.hospital_id,
                          details={"reason": reason, "added": added, "dropped": dropped,
                                   "retired": newly_retired})
    return fresh


def keys_for(home: NodeHome, token: str, *, retired: frozenset[str] = frozenset()
             ) -> dict[str, Any]:
    """The pinned key set that can verify `token`'s signature: refreshed from the portal
    first when it names a key the node has not pinned, or one the portal has retired
    (`retired`, from the latest revocation list) that the node still holds. Raises
    KeyRefused when the key is retired, unknown to the portal too, or cannot be learnt;
    PermitError when `token` is no JWS naming a key."""
    kid = signing_kid(token)
    try:
        jwks = home.permit_jwks()
    except NodeHomeError as exc:
        raise KeyRefused("no-pinned-key", str(exc)) from exc
    stale = kid in retired and kid in _kids(jwks)
    if kid not in _kids(jwks) and kid not in jwks.get("retired", []) or stale:
        try:
            jwks = refresh(home, reason=f"signature by key {kid}")
        except PortalError as exc:
            if stale:  # the revocation list already says it is retired
                raise KeyRefused("permit-key-retired", f"permit key {kid} was retired by "
                                 "the portal") from exc
            raise KeyRefused("permit-key-unknown", f"key {kid} is not pinned here and the "
                             f"portal's key set could not be fetched: {exc}") from exc
    if kid in retired or kid in jwks.get("retired", []):
        raise KeyRefused("permit-key-retired", f"permit key {kid} was retired by the portal: "
                         "nothing it signed is accepted")
    if kid not in _kids(jwks):
        raise KeyRefused("permit-key-unknown", f"the portal publishes no permit key {kid}")
    return jwks
