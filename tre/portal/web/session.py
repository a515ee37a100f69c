"""Server-side web sessions.

The browser holds only an opaque, signed session id (cookie HttpOnly, SameSite=Lax,
Secure behind TLS). Keycloak's tokens, the CSRF synchroniser token and the login in
flight (Authlib's state, nonce and PKCE verifier) stay in this process's memory: a
stolen cookie jar holds no token, and a restart simply asks everyone to log in again
(Keycloak's SSO session makes that one click). Sessions end after `session_idle_s`
without use, when the refresh token is refused, at logout, or when Keycloak says the
Keycloak session behind them ended (back-channel logout).
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, Signer

from access_control.tokens import Principal
from tre.portal.settings import PortalSettings

SESSION_COOKIE = "tre_session"
SECRET_FILE = "web-session-secret"
MAX_SESSIONS = 20_000
MAX_ANONYMOUS = 5_000


def load_or_create_secret(settings: PortalSettings) -> bytes:
    """The cookie-signing key: from settings/env, else generated once into state_dir (0600).

    Kept on disk so that signed cookies stay verifiable across restarts of one
    deployment without anyone having to invent a secret.
    """
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value().encode()
    path: Path = settings.state_dir / SECRET_FILE
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_urlsafe(48).encode())
    return path.read_bytes().strip()


@dataclass
class WebSession:
    """One browser's session; `principal` is set only after a validated login."""

    id: str
    csrf: str
    created: float
    last_seen: float
    oidc: dict[str, Any] = field(default_factory=dict)  # Authlib's `request.session`
    login_next: str = "/"  # where the login in flight returns to
    access_token: str | None = None
    refresh_token: str | None = None
    id_token: str | None = None
    access_exp: float = 0.0
    refresh_exp: float | None = None
    principal: Principal | None = None
    keycloak_sid: str | None = None  # the Keycloak session, for back-channel logout
    flashes: list[str] = field(default_factory=list)

    @property
    def logged_in(self) -> bool:
        return self.principal is not None

    def csrf_ok(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf, str(token))

    def forget_tokens(self) -> None:
        self.access_token = self.refresh_token = self.id_token = None
        self.access_exp, self.refresh_exp, self.principal = 0.0, None, None


class SessionStore:
    """Sessions by id, in memory, in two pools each evicting its least recently used.

    Anonymous sessions (a CSRF token for the language switch, a login in flight) are
    cheap to create, so a flood of them must never push out a logged-in user's
    session: they live in their own, smaller pool."""

    def __init__(self, idle_s: int, max_sessions: int = MAX_SESSIONS,
                 max_anonymous: int = MAX_ANONYMOUS) -> None:
        self.idle_s = idle_s
        self._pools: dict[bool, OrderedDict[str, WebSession]] = {
            False: OrderedDict(), True: OrderedDict()}
        self._caps = {False: max_anonymous, True: max_sessions}
        self._lock = threading.Lock()

    def create(self, *, authenticated: bool = False) -> WebSession:
        now = time.time()
        sess = WebSession(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32),
                          created=now, last_seen=now)
        pool = self._pools[authenticated]
        with self._lock:
            pool[sess.id] = sess
            while len(pool) > self._caps[authenticated]:
                pool.popitem(last=False)
        return sess

    def get(self, sid: str) -> WebSession | None:
        now = time.time()
        with self._lock:
            for pool in self._pools.values():
                sess = pool.get(sid)
                if sess is None:
                    continue
                if now - sess.last_seen > self.idle_s:
                    del pool[sid]
                    return None
                sess.last_seen = now
                pool.move_to_end(sid)
                return sess
        return None

    def delete(self, sid: str) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.pop(sid, None)

    def end_keycloak_session(self, keycloak_sid: str) -> int:
        """Drop every web session opened under that Keycloak session; how many."""
        with self._lock:
            pool = self._pools[True]
            ended = [sid for sid, sess in pool.items() if sess.keycloak_sid == keycloak_sid]
            for sid in ended:
                del pool[sid]
        return len(ended)

    def rotate(self, old: WebSession) -> WebSession:
        """A fresh id and CSRF token at login, so a planted pre-login id is worthless."""
        new = self.create(authenticated=True)
        self.delete(old.id)
        return new

    def __len__(self) -> int:
        return sum(len(pool) for pool in self._pools.values())


class CookieCodec:
    """Signs session ids so that the server never even looks up a forged one."""

    def __init__(self, secret: bytes) -> None:
        self._signer = Signer(secret, salt="tre-portal-web-session")

    def dump(self, sid: str) -> str:
        return self._signer.sign(sid.encode()).decode()

    def load(self, value: str | None) -> str | None:
        if not value:
            return None
        try:
            return self._signer.unsign(value.encode()).decode()
        except BadSignature:
            return None
