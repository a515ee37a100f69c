"""`tre login`: sign in through Keycloak's device authorization grant (RFC 8628).

The CLI is a public client and has no browser of its own, so it shows a URL and a
code, the user approves in any browser, and the CLI polls for tokens. Tokens are
kept in the user config dir, readable only by the user, and refreshed on demand by
`access_token()`, which every CLI command that calls the portal uses.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from access_control.keycloak import oidc
from access_control.keycloak import realm as spec
from tre.cli.common import console, fail
from tre.core.settings import CommonSettings, config_dir

#: A token with less left than this is refreshed before use (clock skew, slow calls).
MIN_VALIDITY_S = 30


class NotLoggedInError(RuntimeError):
    """No usable tokens; the message says to run `tre login`."""


def tokens_path() -> Path:
    return config_dir() / "tokens.json"


def default_keycloak_url() -> str:
    """The running `tre keycloak up` instance if there is one, else TRE_KEYCLOAK_URL."""
    try:
        from access_control.keycloak.server import KeycloakServer

        server = KeycloakServer.load()
        if server is not None and server.is_alive():
            return server.base_url
    except Exception:  # any trouble reading local state: fall back to the setting
        pass
    return CommonSettings().keycloak_url.rstrip("/")


def save_tokens(tokens: dict[str, Any], *, base_url: str, realm: str, client_id: str,
                path: Path | None = None) -> dict[str, Any]:
    """Store a token response with absolute expiry times, mode 0600."""
    now = time.time()
    record = {
        "base_url": base_url,
        "realm": realm,
        "client_id": client_id,
        "access_token": tokens["access_token"],
        "refresh_token": tokens.get("refresh_token"),
        "expires_at": now + float(tokens.get("expires_in", 0)),
        # Keycloak says 0 for tokens that live as long as the session (offline).
        "refresh_expires_at": (now + float(tokens["refresh_expires_in"])
                               if tokens.get("refresh_expires_in") else None),
        "username": oidc.unverified_claims(tokens["access_token"]).get("preferred_username"),
    }
    path = path or tokens_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(record, fh, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return record


def load_tokens(path: Path | None = None) -> dict[str, Any] | None:
    try:
        return json.loads((path or tokens_path()).read_text())
    except (OSError, ValueError):
        return None


def access_token(*, min_validity_s: float = MIN_VALIDITY_S, path: Path | None = None) -> str:
    """A valid access token of the logged-in user, refreshed when close to expiry.

    Raises NotLoggedInError when there is none and the refresh token cannot help."""
    record = load_tokens(path)
    if record is None:
        raise NotLoggedInError("not logged in: run `tre login`")
    now = time.time()
    if record["expires_at"] - now > min_validity_s:
        return record["access_token"]
    refresh_expired = record.get("refresh_expires_at") and record["refresh_expires_at"] <= now
    if not record.get("refresh_token") or refresh_expired:
        raise NotLoggedInError("the login has expired: run `tre login`")
    try:
        tokens = oidc.refresh_grant(
            record["base_url"], record["realm"], record["refresh_token"],
            client_id=record["client_id"],
        )
    except oidc.GrantError as exc:
        raise NotLoggedInError(f"could not refresh the login ({exc}): run `tre login`") from exc
    saved = save_tokens(tokens, base_url=record["base_url"], realm=record["realm"],
                        client_id=record["client_id"], path=path)
    return saved["access_token"]



def bearer_token(token: str | None) -> str:
    """The token given on the command line, else the one `tre login` keeps (refreshed)."""
    return token if token is not None else access_token()


def device_login(
    base_url: str,
    realm: str = spec.REALM,
    *,
    client_id: str = spec.CLI_CLIENT,
    show: Callable[[dict[str, Any]], None] | None = None,
    path: Path | None = None,
) -> dict[str, Any]:
    """Run the device grant: `show` gets the verification URL and user code; returns
    the stored token record once the user approved."""
    device = oidc.device_authorization(base_url, realm, client_id=client_id)
    if show:
        show(device)
    tokens = oidc.poll_device_token(base_url, realm, device, client_id=client_id)
    return save_tokens(tokens, base_url=base_url, realm=realm, client_id=client_id, path=path)


def login(
    url: str | None = typer.Option(None, "--url", help="Keycloak base URL (default: the "
                                   "running `tre keycloak up`, else TRE_KEYCLOAK_URL)."),
    realm: str = typer.Option(CommonSettings().keycloak_realm, help="Realm."),
) -> None:
    """Sign in with your Keycloak account (device authorization grant)."""
    base_url = (url or default_keycloak_url()).rstrip("/")

    def show(device: dict[str, Any]) -> None:
        console.print("To sign in, open:", highlight=False)
        console.print(f"  {device.get('verification_uri_complete') or device['verification_uri']}",
                      highlight=False)
        console.print(f"and check the code [bold]{device['user_code']}[/]; waiting…",
                      highlight=False)

    try:
        record = device_login(base_url, realm, show=show)
    except oidc.GrantError as exc:
        fail(f"login failed: {exc}")
    console.print(f"logged in as {record['username']}; tokens in {tokens_path()}",
                  highlight=False)
