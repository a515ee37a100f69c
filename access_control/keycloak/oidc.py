"""Token grants against a Keycloak realm, over plain httpx.

Used by `tre keycloak token`, `tre login`, the node (client credentials) and the
test fixture. Kept apart from python-keycloak's admin client so that obtaining a
token needs nothing but the realm URL.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class GrantError(Exception):
    """A grant was refused; the message carries Keycloak's error and description."""

    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error


def realm_url(base_url: str, realm: str) -> str:
    return f"{base_url.rstrip('/')}/realms/{realm}"


def token_endpoint(base_url: str, realm: str) -> str:
    return f"{realm_url(base_url, realm)}/protocol/openid-connect/token"


def _post(url: str, data: dict[str, str], timeout: float) -> dict[str, Any]:
    try:
        resp = httpx.post(url, data=data, timeout=timeout)
    except httpx.HTTPError as exc:
        raise GrantError(f"cannot reach {url}: {exc}") from exc
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if resp.status_code != 200:
        error = body.get("error") if isinstance(body, dict) else None
        desc = body.get("error_description", "") if isinstance(body, dict) else ""
        raise GrantError(
            f"{url} answered {resp.status_code}: {error or resp.text[:200]} {desc}".strip(),
            error,
        )
    return body


def password_grant(
    base_url: str,
    realm: str,
    username: str,
    password: str,
    *,
    client_id: str,
    client_secret: str | None = None,
    scope: str = "openid",
    timeout: float = 30,
) -> dict[str, Any]:
    """Resource-owner password grant (dev realm only: needs direct access grants)."""
    data = {
        "grant_type": "password",
        "client_id": client_id,
        "username": username,
        "password": password,
        "scope": scope,
    }
    if client_secret:
        data["client_secret"] = client_secret
    return _post(token_endpoint(base_url, realm), data, timeout)


def client_credentials_grant(
    base_url: str, realm: str, client_id: str, client_secret: str, *, timeout: float = 30
) -> dict[str, Any]:
    """Service-account token of a confidential client (hospital nodes)."""
    data = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": client_secret,
    }
    return _post(token_endpoint(base_url, realm), data, timeout)


def refresh_grant(
    base_url: str, realm: str, refresh_token: str, *, client_id: str, timeout: float = 30
) -> dict[str, Any]:
    """New tokens from a refresh token (public client: no secret)."""
    data = {"grant_type": "refresh_token", "client_id": client_id, "refresh_token": refresh_token}
    return _post(token_endpoint(base_url, realm), data, timeout)


def device_authorization(
    base_url: str, realm: str, *, client_id: str, scope: str = "openid", timeout: float = 30
) -> dict[str, Any]:
    """Start a device authorization grant (RFC 8628): returns device_code, user_code,
    verification_uri(_complete), interval, expires_in."""
    url = f"{realm_url(base_url, realm)}/protocol/openid-connect/auth/device"
    return _post(url, {"client_id": client_id, "scope": scope}, timeout)


def poll_device_token(
    base_url: str,
    realm: str,
    device: dict[str, Any],
    *,
    client_id: str,
    sleep: Callable[[float], None] = time.sleep,
    timeout: float = 30,
) -> dict[str, Any]:
    """Poll the token endpoint until the user approved, denied, or the code expired."""
    interval = float(device.get("interval", 5))
    deadline = time.monotonic() + float(device.get("expires_in", 600))
    data = {"grant_type": DEVICE_GRANT, "client_id": client_id,
            "device_code": device["device_code"]}
    while time.monotonic() < deadline:
        try:
            return _post(token_endpoint(base_url, realm), data, timeout)
        except GrantError as exc:
            if exc.error == "authorization_pending":
                pass
            elif exc.error == "slow_down":
                interval += 5
            else:
                raise
        sleep(interval)
    raise GrantError("the device code expired before the login was approved", "expired_token")


def unverified_claims(token: str) -> dict[str, Any]:
    """Claims of a JWT without checking its signature: only for local bookkeeping
    (expiry of our own cached tokens), never for authorisation."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        return json.loads(base64.urlsafe_b64decode(payload))
    except (IndexError, ValueError) as exc:
        raise GrantError("not a JWT") from exc
