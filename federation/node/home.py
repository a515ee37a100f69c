"""A node's home directory: its configuration, store, audit log and secrets.

Layout (created by `tre node init`):

    node.toml                 hospital id, portal URL, SuperLink address, policy
                              (federation.node.settings)
    node.duckdb               common data model, ledger, node audit log
    federation.key            pseudonymisation key (0600); never leaves the node
    portal-permit-keys.json   the portal's permit JWKS, pinned at enrolment and followed
                              since (federation.node.permit_keys)
    portal-ca.crt             the CA the portal's TLS certificate must chain to, optional
    credentials.json          Keycloak service-account client id/secret (0600), optional
    service-token.json        the service account's current access token (0600), shared by
                              the node's tasks until shortly before it expires
                              (federation.node.portal_client)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import duckdb
from pydantic import ValidationError

from federation.node import schema
from federation.node.settings import (
    NodeSettings,
    StoredNodeSettings,
    describe_error,
    parse_node_toml,
)
from tre.core.audit import MIGRATIONS as AUDIT_MIGRATIONS
from tre.core.audit import AuditLog
from tre.core.db import Database

CONFIG_FILE = "node.toml"
DB_FILE = "node.duckdb"
KEY_FILE = "federation.key"
PERMIT_KEYS_FILE = "portal-permit-keys.json"
PORTAL_CA_FILE = "portal-ca.crt"
CREDENTIALS_FILE = "credentials.json"
TOKEN_CACHE_FILE = "service-token.json"


HOME_ENV = "TRE_NODE_HOME"

S = TypeVar("S", bound=NodeSettings)


def default_home_path() -> Path:
    """Where `tre node` looks when no --home is given: $TRE_NODE_HOME, else ./node-home."""
    return Path(os.environ.get(HOME_ENV) or "node-home")


class NodeHomeError(Exception):
    """The node home is missing or inconsistent; the message says what to run."""


def stored_settings(**values: Any) -> StoredNodeSettings:
    """Settings to write to node.toml, checked: NodeHomeError names a bad field."""
    try:
        return StoredNodeSettings(**values)
    except ValidationError as exc:
        raise NodeHomeError(describe_error(exc, environment=False)) from None


def write_private(path: Path, content: bytes) -> None:
    """Write a secret with mode 0600 from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)


def replace_private(path: Path, content: bytes) -> None:
    """`write_private`, atomically: concurrent readers (the node's other tasks) see the
    old file or the new one, never half of one. The temporary name is per process, so
    two tasks writing at once do not write into each other's file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write_private(tmp, content)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class NodeHome:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().resolve()

    # -- creation ---------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, config: StoredNodeSettings,
               permit_jwks: dict[str, Any]) -> NodeHome:
        home = cls(path)
        home.path.mkdir(parents=True, exist_ok=True)
        home.path.chmod(0o700)  # the store, the audit log and the keys: the operator's only
        home._write_config(config)
        key_path = home.path / KEY_FILE
        if not key_path.exists():  # re-running init must not re-key existing pseudonyms
            write_private(key_path, secrets.token_bytes(32).hex().encode())
        home.pin_permit_keys(permit_jwks)
        home.db  # noqa: B018 - creates the store and runs migrations
        (home.path / DB_FILE).chmod(0o600)
        return home

    def exists(self) -> bool:
        return (self.path / CONFIG_FILE).exists()

    def close(self) -> None:
        """Release node.duckdb: DuckDB locks the file per process, and the ClientApps that
        Flower starts for each message must be able to open it."""
        db = self.__dict__.pop("db", None)
        self.__dict__.pop("audit", None)
        if db is not None:
            db.close()

    def require(self) -> NodeHome:
        if not self.exists():
            raise NodeHomeError(
                f"no node home at {self.path}: run `tre node init --hospital-id H --portal URL`"
            )
        return self

    # -- parts ------------------------------------------------------------------
    @cached_property
    def config(self) -> NodeSettings:
        """The settings in force: node.toml under the environment's overrides."""
        return self._load_settings(NodeSettings)

    def stored_config(self) -> StoredNodeSettings:
        """node.toml's settings alone: the base for writing it back."""
        return self._load_settings(StoredNodeSettings)

    def _load_settings(self, kind: type[S]) -> S:
        self.require()
        path = self.path / CONFIG_FILE
        try:
            return kind(**parse_node_toml(path.read_text()))
        except ValueError as exc:  # pydantic's ValidationError is one
            why = (describe_error(exc, environment=kind.read_environment)
                   if isinstance(exc, ValidationError) else str(exc))
            raise NodeHomeError(f"{path}: {why}") from None

    def update_config(self, **changes: Any) -> NodeSettings:
        """Write node.toml with `changes` over its stored values, checked first: a bad
        value is refused naming its field, and the file keeps its old content."""
        values = self.stored_config().model_dump(exclude_unset=True) | changes
        self._write_config(stored_settings(**values))
        self.__dict__.pop("config", None)
        return self.config

    def _write_config(self, config: StoredNodeSettings) -> None:
        """Atomically: the node's running tasks read node.toml at any moment."""
        replace_private(self.path / CONFIG_FILE, config.to_toml().encode())

    @cached_property
    def db(self) -> Database:
        db = Database(self.path / DB_FILE)
        db.migrate(schema.COMPONENT, schema.MIGRATIONS)
        # The audit table too, up front: a transaction that appends to it must not be
        # the first to touch it (tables created after BEGIN are invisible inside it).
        db.migrate("audit", AUDIT_MIGRATIONS)
        return db

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog(self.db)

    @property
    def actor(self) -> str:
        return f"node:{self.config.hospital_id}"

    def permit_jwks(self) -> dict[str, Any]:
        path = self.path / PERMIT_KEYS_FILE
        if not path.exists():
            raise NodeHomeError("no pinned portal key: run `tre node init` against the portal")
        return json.loads(path.read_text())

    def pin_permit_keys(self, jwks: dict[str, Any]) -> None:
        tmp = self.path / f".{PERMIT_KEYS_FILE}.tmp"
        tmp.write_text(json.dumps(jwks, indent=2))
        os.replace(tmp, self.path / PERMIT_KEYS_FILE)

    @property
    def portal_verify(self) -> str | bool:
        """How the node checks the portal's TLS certificate: against the CA pinned at init
        (`portal-ca.crt`, e.g. the federation CA), else the system's trusted CAs."""
        ca = self.path / PORTAL_CA_FILE
        return str(ca) if ca.exists() else True

    def credentials(self) -> dict[str, str] | None:
        """Service-account credentials: env TRE_NODE_CLIENT_ID/SECRET first, then the 0600 file."""
        cid, secret = os.environ.get("TRE_NODE_CLIENT_ID"), os.environ.get("TRE_NODE_CLIENT_SECRET")
        if cid and secret:
            return {"client_id": cid, "client_secret": secret}
        path = self.path / CREDENTIALS_FILE
        if path.exists():
            return json.loads(path.read_text())
        return None

    def save_credentials(self, client_id: str, client_secret: str) -> None:
        write_private(
            self.path / CREDENTIALS_FILE,
            json.dumps({"client_id": client_id, "client_secret": client_secret}).encode(),
        )

    @cached_property
    def _federation_key(self) -> bytes:
        return bytes.fromhex((self.path / KEY_FILE).read_text().strip())

    def pseudonymise(self, local_patient_id: str) -> str:
        """Keyed hash of a local patient id: stable per federation key, not reversible."""
        return pseudonym(self._federation_key, local_patient_id)

    def pseudonymise_many(self, local_patient_ids: Iterable[str]) -> list[str]:
        """`pseudonymise` for a whole batch (same values; the HMAC key schedule runs once)."""
        return pseudonyms(self._federation_key, local_patient_ids)

    def derive_key(self, purpose: str) -> bytes:
        """A sub-key of the federation key for one purpose (study ids, disclosure noise...).

        Separate keys keep one use from being replayed as another; all of them die with
        the federation key, which never leaves the node.
        """
        return hmac.new(self._federation_key, f"derive:{purpose}".encode(), hashlib.sha256).digest()

    def keyed_id(self, prefix: str, purpose: str, value: str) -> str:
        """A short keyed-hash identifier (e.g. a study id from a SOPInstanceUID)."""
        return keyed_ids(self.derive_key(purpose), prefix, [value])[0]


@contextmanager
def node_session(path: str | Path, *, timeout_s: float = 120.0) -> Iterator[NodeHome]:
    """Open a node home's store, waiting while another process holds it.

    DuckDB lets one process at a time open a file for writing, and Flower runs every
    message in a new process, so concurrent runs on one node take turns here. The file
    is closed on exit so that the next process (or `tre node ...`) can open it.
    """
    deadline = time.monotonic() + timeout_s
    home = NodeHome(path).require()
    while True:
        try:
            home.db  # noqa: B018 - opens the store
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            home.__dict__.pop("db", None)
            time.sleep(0.1 + random.random() * 0.3)
    try:
        yield home
    finally:
        home.db.close()
        for name in ("db", "audit"):
            home.__dict__.pop(name, None)


def pseudonym(key: bytes, local_patient_id: str) -> str:
    digest = hmac.new(key, f"patient:{local_patient_id}".encode(), hashlib.sha256)
    return "ps_" + digest.hexdigest()[:32]


def pseudonyms(key: bytes, local_patient_ids: Iterable[str]) -> list[str]:
    """Batch form of `pseudonym`, identical output (RFC 2104 HMAC-SHA256 with the padded
    key states hashed once: 2-3x faster than `hmac` objects for a whole file)."""
    block = hashlib.sha256(key).digest() if len(key) > 64 else key
    block = block.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
    out = []
    for local_id in local_patient_ids:
        i = inner.copy()
        i.update(f"patient:{local_id}".encode())
        o = outer.copy()
        o.update(i.digest())
        out.append("ps_" + o.hexdigest()[:32])
    return out


def keyed_ids(key: bytes, prefix: str, values: Iterable[str]) -> list[str]:
    """Keyed BLAKE2b identifiers `<prefix>_<32 hex>`: fast enough for every image of a batch."""
    base = hashlib.blake2b(key=key[:64], digest_size=16)
    out = []
    for v in values:
        h = base.copy()
        h.update(v.encode())
        out.append(f"{prefix}_" + h.hexdigest())
    return out
