"""Bearer tokens end with their Keycloak session, not minutes later.

An access token stays valid until it expires (5 minutes in the demo realm) even after an
administrator or the user ended the session in Keycloak. Reads may run out that clock;
every write asks Keycloak whether the session behind the token is still alive (RFC 7662
token introspection, as the portal's confidential client) and remembers the answer for
at most 30 s, so a burst of writes costs one call. Tokens with no user session behind
them (service accounts: no `sid` claim) have nothing to end and are not asked about.

Short lifetimes alone would still leave a window of a whole token lifetime, and
Keycloak's admin events reach no one who does not poll for them: introspection on writes
closes the window for what changes state, at one call per user per 30 s.
"""

from __future__ import annotations

import hashlib
import threading
import time

import httpx


class SessionUnknown(Exception):
    """Keycloak could not say whether the session is alive (it did not answer)."""


class SessionCheck:
    def __init__(self, issuer: str, client_id: str, client_secret: str, *,
                 ttl_s: float = 30.0, http: httpx.Client | None = None) -> None:
        self.url = f"{issuer.rstrip('/')}/protocol/openid-connect/token/introspect"
        self._auth = (client_id, client_secret)
        self.ttl_s = ttl_s
        self._http = http or httpx.Client(timeout=10.0)
        self._seen: dict[str, tuple[bool, float]] = {}
        self._lock = threading.Lock()

    def alive(self, token: str) -> bool:
        """Whether Keycloak still holds the session behind `token` (cached ≤ ttl_s)."""
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
        if seen and now - seen[1] < self.ttl_s:
            return seen[0]
        try:
            resp = self._http.post(self.url, data={"token": token}, auth=self._auth)
            resp.raise_for_status()
            active = bool(resp.json().get("active"))
        except (httpx.HTTPError, ValueError) as exc:
            raise SessionUnknown(f"Keycloak did not answer whether the session is alive: "
                                 f"{exc}") from exc
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen.clear()
            self._seen[key] = (active, now)
        return active
