"""A node's Flower identity: its SuperNode key pair, enrolled with the portal once.

Why: the ServerApp must address only the SuperNodes of a permit's hospitals, so
the portal has to know which Flower node is which hospital, from something the
node cannot fake per run. In flwr 1.42 a SuperNode started with
`--auth-supernode-private-key` does not self-register: it activates as the node id
the SuperLink assigned when its public key was registered (`flwr supernode
register`, Control API). The node keeps the private key in its home (0600, never
sent anywhere); at enrolment its service account sends the public key to the
portal (`PUT /v1/nodes/{hospital}/flower-key`), which registers it with the
SuperLink and records hospital → node id (see `tre.portal.services.nodes`).

`tre federation provision` can instead issue the key pair centrally (CA-style
deployments); `install_key` puts a provisioned key into a home.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from federation.node.home import NodeHome, NodeHomeError, node_session, write_private
from federation.node.portal_client import PortalClient, PortalError
from tre.core.audit import AuditAction

if TYPE_CHECKING:
    from tre.core.checkpoints import SignedExport, SigningKey

_log = logging.getLogger(__name__)

KEY_FILE = "flower-node-key"
PUB_FILE = "flower-node-key.pub"
ENROL_TIMEOUT_S = 120.0
#: A checkpoint after an answer must not hold the answer up for long.
CHECKPOINT_TIMEOUT_S = 5.0
#: A serving node also checkpoints at least this often, on days without any answer.
CHECKPOINT_INTERVAL_S = 24 * 3600


def generate_key_pair() -> tuple[bytes, bytes]:
    """A P-384 key pair as OpenSSH private key and OpenSSH public key (Flower's formats)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    return private, public + b"\n"


def key_path(home: NodeHome) -> Path:
    return home.path / KEY_FILE


def ensure_node_key(home: NodeHome) -> Path:
    """The node's private key file, created on first use."""
    path = key_path(home)
    if not path.exists():
        private, public = generate_key_pair()
        write_private(path, private)
        (home.path / PUB_FILE).write_bytes(public)
    return path


def install_key(home: NodeHome, private_key: Path, public_key: Path) -> Path:
    """Use a provisioned key pair (e.g. from `tre federation provision`)."""
    write_private(key_path(home), Path(private_key).read_bytes())
    shutil.copyfile(public_key, home.path / PUB_FILE)
    return key_path(home)


def public_key(home: NodeHome) -> str:
    ensure_node_key(home)
    return (home.path / PUB_FILE).read_text().strip()


def enrol(home: NodeHome, client: PortalClient | None = None) -> dict[str, Any]:
    """Register this node's public key with the portal (its own hospital only); returns
    the registry row, including the Flower node id the SuperLink assigned."""
    client = client or PortalClient.for_home(home)
    # the portal registers the key with the SuperLink through Flower's CLI: seconds
    row = client.register_flower_key(home.config.hospital_id, public_key(home),
                                     timeout=ENROL_TIMEOUT_S)
    home.audit.record(actor=home.actor, action=AuditAction.NODE_ENROL, object_type="node",
                      object_id=home.config.hospital_id,
                      details={"node_id": row.get("node_id"), "superlink": row.get("superlink")})
    return row


def send_checkpoint(home: NodeHome, client: PortalClient | None = None) -> dict[str, Any]:
    """Sign this node's audit chain head with its enrolled key and hand it to the portal
    (`tre.core.checkpoints`): from then on a cut tail or a rewritten chain of this
    node's log contradicts a checkpoint someone else holds."""
    return (client or PortalClient.for_home(home)).send_checkpoint(_signed_head(home))


def checkpoint_best_effort(home_path: Path) -> dict[str, Any] | None:
    """Send a checkpoint after a run or a feasibility answer, so that what the node just
    recorded is pinned at once. The store is closed before the HTTP call (the node's
    other ClientApps must not wait for its lock meanwhile), and it is best effort: a
    node not enrolled, or a portal out of reach, must not turn an answer into an error
    (the next answer, or the serving node's daily checkpoint, catches up); it is logged
    instead."""
    try:
        with node_session(home_path) as home:
            if not key_path(home).exists() or home.credentials() is None:
                return None
            body = _signed_head(home)
            client = PortalClient.for_home(home, timeout=CHECKPOINT_TIMEOUT_S)
        return client.send_checkpoint(body)
    except (PortalError, NodeHomeError, duckdb.Error, OSError, ValueError) as exc:
        _log.warning("no checkpoint sent from %s: %s", home_path, exc)
        return None


def _signed_head(home: NodeHome) -> dict[str, Any]:
    """The node's audit chain head signed with its enrolled key, as the portal takes it."""
    from datetime import UTC, datetime

    from tre.core.checkpoints import Checkpoint

    seq, digest = home.audit.head()
    checkpoint = Checkpoint(home.config.hospital_id, seq, digest,
                            datetime.now(UTC).isoformat(timespec="seconds"))
    signed = checkpoint.signed(_signing_key(home))
    return {k: v for k, v in signed.as_dict().items() if k != "party"}


def signed_audit_export(home: NodeHome) -> SignedExport:
    """The whole log as JSON Lines, signed with the enrolled key: audit rows only, which
    carry no records."""
    from tre.core.checkpoints import SignedExport

    jsonl = "".join(line + "\n" for line in home.audit.export_jsonl())
    return SignedExport(home.config.hospital_id, jsonl).signed(_signing_key(home))


def upload_audit_export(home: NodeHome, client: PortalClient | None = None) -> dict[str, Any]:
    """Checkpoint the head, then hand the signed log to the portal for a remote audit."""
    client = client or PortalClient.for_home(home)
    send_checkpoint(home, client)
    export = signed_audit_export(home)
    return client.upload_audit_export(home.config.hospital_id,
                                      {"jsonl": export.jsonl, "signature": export.signature})


def _signing_key(home: NodeHome) -> SigningKey:
    """The enrolled SuperNode key: what the portal checks checkpoints and exports with."""
    from cryptography.hazmat.primitives import serialization

    if not key_path(home).exists():
        raise PortalError(f"{key_path(home)} does not exist: enrol this node first "
                          "(`tre node serve --secure` does)")
    return serialization.load_ssh_private_key(  # type: ignore[return-value]
        key_path(home).read_bytes(), password=None)
