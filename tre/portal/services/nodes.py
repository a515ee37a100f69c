"""The node registry: which Flower SuperNode speaks for which hospital.

Why a registry and not whatever a node says about itself: the ServerApp must send
a run's messages only to the hospitals of its permit, and a SuperNode's self-chosen
`hospital-id` proves nothing. Flower 1.42 binds a node id to a public key: a
SuperNode started with `--auth-supernode-private-key` does not self-register, it
activates as the node id that `flwr supernode register <public key>` returned
(Control API). So at enrolment each hospital's node registers its public key here
(its `node` service account, for its own `hospital_id` only, or an admin for it);
the portal registers that key with its SuperLink and records hospital → node id.
Runs and feasibility queries then carry that mapping in their run config
(`node-map`), and the ServerApp addresses exactly those node ids.

On the secure path (`--enable-supernode-auth` + TLS) the SuperLink also checks
every request's signature against the registered key, so a node id cannot be
claimed by anyone without the hospital's private key, and an unregistered key is
refused outright.
"""

from __future__ import annotations

from typing import Any

from access_control.policy import Role
from access_control.tokens import Principal
from federation import launch
from federation.launch.control import ControlAPI, ControlError
from tre.core.audit import AuditAction
from tre.portal.context import Portal, utcnow
from tre.portal.errors import Conflict, Forbidden, Invalid
from tre.portal.store import nodes as store


def _check_key(public_key: str) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_ssh_public_key(public_key.strip().encode())
    except (ValueError, TypeError) as exc:
        raise Invalid(f"public_key is not an OpenSSH public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise Invalid("public_key must be an elliptic-curve key (NIST P-256/384/521)")
    return public_key.strip()


def register(portal: Portal, principal: Principal, hospital_id: str,
             public_key: str) -> dict[str, Any]:
    """Register (or confirm) a hospital's SuperNode key with the SuperLink; audited."""
    if not principal.has_any(frozenset({Role.ADMIN.value})) and \
            principal.hospital_id != hospital_id:
        raise Forbidden(f"this node's service account belongs to {principal.hospital_id!r}: "
                        f"it cannot enrol a node for {hospital_id!r}")
    key = _check_key(public_key)
    s = portal.settings
    with portal.db.reader() as cur:
        existing = store.get_node(cur, hospital_id)
    if existing and existing["public_key"] == key and existing["superlink"] == s.superlink:
        return existing
    try:
        node_id = launch.register_supernode(
            s.superlink, key, insecure=s.superlink_insecure,
            root_certificates=s.superlink_root_certificates, name=hospital_id)
    except launch.RunError as exc:
        raise Conflict(f"the SuperLink refused to register the node: {exc}") from exc
    with portal.db.transaction() as cur:
        store.upsert_node(cur, hospital_id, key, node_id, s.superlink, principal.username,
                          utcnow())
        portal.audit.append(cur, actor=principal.username, action=AuditAction.NODE_ENROL,
                            object_type="node", object_id=hospital_id,
                            details={"node_id": node_id, "superlink": s.superlink,
                                     "replaced_node_id": existing and existing["node_id"]})
        return store.get_node(cur, hospital_id)


def node_map(portal: Portal, hospitals: list[str]) -> tuple[dict[str, int], list[str]]:
    """hospital → Flower node id for the given hospitals, and those never enrolled."""
    with portal.db.reader() as cur:
        rows = {r["hospital_id"]: r for r in store.list_nodes(cur)}
    mapping = {h: int(rows[h]["node_id"]) for h in hospitals
               if h in rows and rows[h]["superlink"] == portal.settings.superlink}
    return mapping, [h for h in hospitals if h not in mapping]


def list_nodes(portal: Portal) -> list[dict[str, Any]]:
    """Enrolled nodes, each with whether its SuperNode is connected now (`online`; None
    when the SuperLink cannot be asked)."""
    with portal.db.reader() as cur:
        rows = store.list_nodes(cur)
    s = portal.settings
    try:
        online: set[int] | None = ControlAPI(s.superlink, s.superlink_insecure,
                                             s.superlink_root_certificates).online_nodes()
    except ControlError:
        online = None
    return [{**r, "online": None if online is None else r["node_id"] in online} for r in rows]
