"""The pseudonymisation service's home: its OPRF key and its own store with the audit log.

Layout (created by `tre pseudonymiser init`):

    oprf.key               the OPRF secret scalar, hex (0600); never leaves this directory
    pseudonymiser.duckdb   the hash-chained audit log (who asked for how many, never what)

The key is the federation's pseudonym function: a new key gives every person a new
pseudonym, so `init` never replaces an existing one.
"""

from __future__ import annotations

import hashlib
import os
from functools import cached_property
from pathlib import Path

import pysodium

from pseudonymisation import oprf
from tre.core.audit import AuditAction, AuditLog
from tre.core.db import Database

KEY_FILE = "oprf.key"
DB_FILE = "pseudonymiser.duckdb"
ACTOR = "pseudonymiser"


class HomeError(Exception):
    """The home is missing or its key unusable; the message says what to run."""


class PseudonymiserHome:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().resolve()

    @classmethod
    def create(cls, path: str | Path) -> tuple[PseudonymiserHome, bool]:
        """Create the home and draw the key; (home, False) when a key was already there."""
        home = cls(path)
        home.path.mkdir(parents=True, exist_ok=True)
        home.path.chmod(0o700)
        created = not (home.path / KEY_FILE).exists()
        if created:  # 0600 from the first byte; O_EXCL: a key is never overwritten
            fd = os.open(home.path / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(oprf.random_scalar().hex().encode())
        home.audit  # noqa: B018 - creates the store and its audit table
        (home.path / DB_FILE).chmod(0o600)
        if created:
            home.audit.record(actor=ACTOR, action=AuditAction.KEY_CREATE, object_type="oprf_key",
                              object_id=home.key_id, details={"suite": oprf.SUITE})
        return home, created

    def require(self) -> PseudonymiserHome:
        if not (self.path / KEY_FILE).exists():
            raise HomeError(f"no pseudonymiser home at {self.path}: run "
                            f"`tre pseudonymiser init --home {self.path}`")
        return self

    @cached_property
    def key(self) -> bytes:
        path = self.require().path / KEY_FILE
        if path.stat().st_mode & 0o077:
            raise HomeError(f"{path} is readable by others: chmod 600 it (and ask whether "
                            "the key has leaked, which would expose every pseudonym)")
        try:
            return oprf.check_scalar(bytes.fromhex(path.read_text().strip()))
        except (ValueError, oprf.OprfError) as exc:
            raise HomeError(f"{path} does not hold an OPRF key: {exc}") from exc

    @cached_property
    def key_id(self) -> str:
        """A public name of the key (hash of skS·G): tells parties the key changed,
        reveals nothing of it."""
        public = pysodium.crypto_scalarmult_ristretto255_base(self.key)
        return hashlib.sha256(public).hexdigest()[:16]

    @cached_property
    def db(self) -> Database:
        return Database(self.path / DB_FILE)

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog(self.db)

    def close(self) -> None:
        db = self.__dict__.pop("db", None)
        self.__dict__.pop("audit", None)
        if db is not None:
            db.close()
