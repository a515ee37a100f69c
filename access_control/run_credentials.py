"""Per-run credentials: how a run's ServerApp proves to the portal that it may report
that run's results, without anyone else on the way learning the secret.

The portal issues a random credential when it submits a run and keeps only its
digest. The credential travels in the run config, which Flower also hands to every
SuperNode, so it is sealed first with the SuperLink's report key (HPKE, RFC 9180:
X25519, HKDF-SHA256, ChaCha20-Poly1305, through `cryptography`): only the SuperLink
that runs the ServerApp can open it, and a hospital that reads its run config learns
nothing it could post results with.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.CHACHA20_POLY1305)
INFO = b"tre run-report credential v1"
KEY_FILE = "report-key.pem"
PUBLIC_FILE = "report-key.pub"


class CredentialError(Exception):
    """A sealed credential or a report key is unusable; the message says which."""


def issue() -> tuple[str, str]:
    """A new credential and the digest the portal keeps instead of it."""
    credential = secrets.token_urlsafe(32)
    return credential, digest(credential)


def digest(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


def seal(credential: str, public_key: str) -> str:
    """The credential sealed to the SuperLink's report key (base64 raw X25519)."""
    try:
        key = X25519PublicKey.from_public_bytes(base64.b64decode(public_key, validate=True))
    except ValueError as exc:
        raise CredentialError(f"the SuperLink's report key is not a base64 X25519 key: {exc}"
                              ) from exc
    return base64.b64encode(SUITE.encrypt(credential.encode(), key, info=INFO)).decode()


class ReportKey:
    """The SuperLink's report key pair, kept in its own state folder (0600)."""

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private

    @classmethod
    def load(cls, folder: str | Path) -> ReportKey:
        path = Path(folder) / KEY_FILE
        try:
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise CredentialError(f"cannot read the report key {path}: {exc}") from exc
        if not isinstance(private, X25519PrivateKey):
            raise CredentialError(f"{path} is not an X25519 private key")
        return cls(private)

    @classmethod
    def load_or_create(cls, folder: str | Path) -> ReportKey:
        """Load the key from `folder`, or create it there; its public half goes beside it
        (`report-key.pub`: what the SuperLink's operator gives the portal)."""
        folder = Path(folder)
        if (folder / KEY_FILE).exists():
            key = cls.load(folder)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            key = cls(X25519PrivateKey.generate())
            pem = key._private.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())
            fd = os.open(folder / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
        (folder / PUBLIC_FILE).write_text(key.public + "\n")
        return key

    @property
    def public(self) -> str:
        raw = self._private.public_key().public_bytes(serialization.Encoding.Raw,
                                                      serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode()

    def open(self, sealed: str) -> str:
        """The credential inside `sealed`; CredentialError if it was not sealed to this key."""
        if not sealed:
            raise CredentialError("the run carries no report credential")
        try:
            return SUITE.decrypt(base64.b64decode(sealed, validate=True), self._private,
                                 info=INFO).decode()
        except (ValueError, InvalidTag) as exc:
            raise CredentialError("the run's report credential was not sealed to this "
                                  "SuperLink's report key") from exc
