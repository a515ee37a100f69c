"""The node's one HTTP path to the portal: permit keys, revocations, consent snapshots,
enrolment, checkpoints, audit exports, descriptors and synthetic releases.

The portal's TLS certificate is checked against the CA pinned in the node home at
`tre node init --portal-ca` (else the system's CAs); plain http is for `--insecure`
development homes only.

The node authenticates as its Keycloak service account (client-credentials grant,
one client per hospital, role `node`); the portal decides from the token's
`hospital_id` what the node may publish. Flower starts a new process for every
task, so a client made by `for_home` keeps the token in the node home
(`service-token.json`, 0600) until shortly before it expires: one grant per token
lifetime rather than one per task. A 401 from the portal drops it and retries once
with a fresh one. The token itself is never logged, audited or put in an error.
Failures become `PortalError` with a message that names the URL and the portal's
answer, for a one-line CLI error.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
from jwcrypto import jwk

from federation.node.home import TOKEN_CACHE_FILE, NodeHome, replace_private
from tre.core.settings import CommonSettings

_log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
#: Synthetic tables and plots are megabytes, not a descriptor's kilobytes.
UPLOAD_TIMEOUT_S = 120.0
#: A cached token is used only while it has at least this long to live: a call that
#: starts with it must not reach the portal after it expired.
TOKEN_MARGIN_S = 30.0

#: Tokens of clients without a node home, by `_token_key` values: (token, expiry).
_TOKENS: dict[tuple[str, ...], tuple[str, float]] = {}
#: TLS contexts by (`verify`, the CA file's mtime): see `tls_context`.
_TLS: dict[tuple[str | bool, int], ssl.SSLContext] = {}


class PortalError(Exception):
    """The portal or Keycloak could not be reached or refused; `status` is the HTTP code."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def problem_detail(resp: httpx.Response) -> str:
    """What an error answer says: its problem `detail` (or OAuth `error`), else its text."""
    try:
        body = resp.json()
        if isinstance(body, dict):
            detail = body.get("detail") or body.get("error_description") or body.get("error")
            if detail:
                return str(detail)
    except ValueError:
        pass
    return resp.text[:200] or resp.reason_phrase


def validate_permit_jwks(jwks: Any) -> dict[str, Any]:
    """A JWKS of Ed25519 public keys (and the ids of retired keys), or PortalError: a node
    must not pin anything else."""
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not keys:
        raise PortalError("the portal's permit-keys answer is not a JWKS with at least one key")
    retired = jwks.get("retired", [])
    if not isinstance(retired, list) or not all(isinstance(k, str) for k in retired):
        raise PortalError("the portal's list of retired permit keys is not a list of key ids")
    for entry in keys:
        try:
            key = jwk.JWK(**entry)
        except Exception as exc:  # noqa: BLE001 - jwcrypto raises several kinds
            raise PortalError(f"the portal sent an invalid permit key: {exc}") from exc
        if key.get("kty") != "OKP" or key.get("crv") != "Ed25519":
            raise PortalError("the portal sent a permit key that is not Ed25519")
        if key.has_private:
            raise PortalError("the portal sent a private key as a permit key; refusing to pin it")
        if not key.get("kid"):
            raise PortalError("the portal sent a permit key without a key id (kid)")
    return {"keys": [k for k in keys if k["kid"] not in retired], "retired": sorted(retired)}


def tls_context(verify: str | bool) -> ssl.SSLContext:
    """The TLS context of a `verify` setting (a CA file or folder, True: the system's CAs,
    False: none), built once per process and CA file version: loading a CA bundle costs
    about 20 ms of CPU, more than a small portal call, and a task makes several."""
    try:
        stamp = os.stat(verify).st_mtime_ns if isinstance(verify, str) else 0
    except OSError:
        stamp = -1  # missing: building the context names the problem
    context = _TLS.get((verify, stamp))
    if context is None:
        if isinstance(verify, str):
            context = (ssl.create_default_context(capath=verify) if os.path.isdir(verify)
                       else ssl.create_default_context(cafile=verify))
        else:
            context = httpx.create_ssl_context(verify=verify)
        _TLS[(verify, stamp)] = context
    return context


@dataclass(frozen=True)
class ConsentSnapshot:
    """One `GET /v1/consents/snapshot` answer: the consents changed after `since`
    (`kind` 'delta') or all of them ('full'), as of registry `version`."""

    table: pa.Table
    kind: str
    version: int
    total: int | None = None
    """Consents in the registry at `version` (None from a portal that does not say)."""


class PortalClient:
    """Typed calls to the portal's node-facing routes."""

    def __init__(
        self,
        portal_url: str,
        *,
        keycloak_url: str | None = None,
        realm: str | None = None,
        credentials: dict[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        verify: str | bool = True,
        token_cache: Path | None = None,
    ) -> None:
        settings = CommonSettings()
        self.portal_url = portal_url.rstrip("/")
        self.verify = verify  # the portal's TLS: a CA file, or the system's CAs
        self.keycloak_url = (keycloak_url or settings.keycloak_url).rstrip("/")
        self.realm = realm or settings.keycloak_realm
        self.credentials = credentials
        self.timeout = timeout
        self.token_cache = token_cache  # a file shared by the node's tasks, else this process

    @classmethod
    def for_home(cls, home: NodeHome, *, timeout: float = DEFAULT_TIMEOUT_S) -> PortalClient:
        """Keycloak URL and realm from the node's settings (which resolve the environment);
        the token cached in the home, shared with the node's other tasks."""
        cfg = home.config
        return cls(
            cfg.portal_url,
            keycloak_url=cfg.keycloak_url,
            realm=cfg.keycloak_realm,
            credentials=home.credentials(),
            timeout=timeout,
            verify=home.portal_verify,
            token_cache=home.path / TOKEN_CACHE_FILE,
        )

    # -- plumbing -------------------------------------------------------------------
    def _request(self, method: str, url: str, *, timeout: float | None = None,
                 **kwargs: Any) -> httpx.Response:
        """One call; the portal's certificate is checked with the node's pinned CA."""
        verify = self.verify if url.startswith(self.portal_url) else True
        try:
            return httpx.request(method, url, timeout=timeout or self.timeout,
                                 verify=tls_context(verify), **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(url, exc) from exc

    def _unreachable(self, url: str, exc: Exception) -> PortalError:
        """What failed, and where to look next."""
        hint = ("is the portal running there, and is --portal-ca the CA of its certificate?"
                if url.startswith(self.portal_url) else
                "is Keycloak running there (--keycloak-url, node.toml keycloak_url)?")
        return PortalError(f"cannot reach {url}: {type(exc).__name__}: {exc}; {hint}")

    @property
    def token_endpoint(self) -> str:
        """Keycloak's token URL for this client's realm: part of the cached token's key."""
        return f"{self.keycloak_url}/realms/{self.realm}/protocol/openid-connect/token"

    def _token_key(self) -> dict[str, str]:
        """What a cached token belongs to: another Keycloak, realm, client or secret (a
        rotated one) must never reuse it."""
        creds = self.credentials or {}
        return {"token_endpoint": self.token_endpoint,
                "client_id": creds.get("client_id", ""),
                "secret_sha256": hashlib.sha256(
                    creds.get("client_secret", "").encode()).hexdigest()}

    def _cached_token(self, key: dict[str, str]) -> str | None:
        if self.token_cache is None:
            token, expires_at = _TOKENS.get(tuple(key.values()), ("", 0.0))
        else:
            try:
                entry = json.loads(self.token_cache.read_text())
                if any(entry.get(k) != v for k, v in key.items()):
                    return None
                token, expires_at = str(entry["access_token"]), float(entry["expires_at"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return None  # none yet, or unreadable: a new grant replaces it
        return token if token and expires_at > time.time() + TOKEN_MARGIN_S else None

    def _store_token(self, key: dict[str, str], token: str, expires_at: float) -> None:
        if self.token_cache is None:
            _TOKENS[tuple(key.values())] = (token, expires_at)
            return
        entry = {**key, "access_token": token, "expires_at": expires_at}
        try:
            replace_private(self.token_cache, json.dumps(entry).encode())
        except OSError as exc:  # a read-only home still works, one grant per task
            _log.warning("service token not cached in %s: %s", self.token_cache,
                         type(exc).__name__)

    def drop_token(self) -> None:
        """Forget the cached token (the portal refused it), here and for the other tasks."""
        _TOKENS.pop(tuple(self._token_key().values()), None)
        if self.token_cache is not None:
            self.token_cache.unlink(missing_ok=True)

    def access_token(self) -> str:
        """The service account's bearer token (client-credentials grant), cached until
        shortly before it expires: in the node home for clients of `for_home` (each
        Flower task is a new process), else in this process."""
        key = self._token_key()
        cached = self._cached_token(key)
        if cached:
            return cached
        if not self.credentials:
            raise PortalError(
                "no service-account credentials: set TRE_NODE_CLIENT_ID / TRE_NODE_CLIENT_SECRET"
                " or run `tre node init --credentials-file FILE`"
            )
        url = self.token_endpoint
        asked_at = time.time()  # expiry counts from the request: never later than Keycloak's
        resp = self._request(
            "POST", url, data={"grant_type": "client_credentials", **self.credentials}
        )
        if resp.status_code != 200:
            raise PortalError(
                f"Keycloak refused the node's credentials at {url}: {resp.status_code} "
                f"{problem_detail(resp)}", resp.status_code)
        try:
            body = resp.json()
            token = str(body["access_token"])
            expires_in = float(body.get("expires_in", 60))
        except (ValueError, KeyError, TypeError) as exc:
            raise PortalError(f"Keycloak at {url} did not answer a token") from exc
        self._store_token(key, token, asked_at + expires_in)
        return token

    def _authed(self, method: str, url: str, *, optional: bool = False,
                timeout: float | None = None, **kwargs: Any) -> httpx.Response:
        """A call as the node's service account. A 401 means the cached token is no
        longer good (a restarted Keycloak, a revoked session): drop it and retry once with
        a fresh one. `optional`: without credentials, or with Keycloak out of reach, the
        call goes out without a token (routes a portal may also answer anonymously)."""
        headers = dict(kwargs.pop("headers", None) or {})

        def send() -> httpx.Response:
            token = None
            if self.credentials or not optional:
                try:
                    token = self.access_token()
                except PortalError:
                    if not optional:
                        raise
            auth = {"Authorization": f"Bearer {token}"} if token else {}
            return self._request(method, url, timeout=timeout, headers={**headers, **auth},
                                 **kwargs)

        resp = send()
        if resp.status_code == 401 and self.credentials:
            self.drop_token()
            resp = send()
        return resp

    # -- routes ---------------------------------------------------------------------
    def permit_keys(self) -> dict[str, Any]:
        """`GET /v1/permit-keys`: the JWKS the node pins to verify permits."""
        url = f"{self.portal_url}/v1/permit-keys"
        resp = self._request("GET", url)
        if resp.status_code != 200:
            raise PortalError(f"{url} answered {resp.status_code}: {problem_detail(resp)}",
                              resp.status_code)
        try:
            data = resp.json()
        except ValueError as exc:
            raise PortalError(f"{url} did not answer JSON") from exc
        return validate_permit_jwks(data)

    def publish_dataset(self, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /v1/catalogue/datasets` with a descriptor (see descriptor.publication_body)."""
        url = f"{self.portal_url}/v1/catalogue/datasets"
        resp = self._authed("POST", url, json=body)
        if resp.status_code not in (200, 201):
            raise PortalError(
                f"the portal refused dataset {body.get('dataset_id')}: {resp.status_code} "
                f"{problem_detail(resp)}", resp.status_code)
        try:
            return resp.json()
        except ValueError:
            return {}

    def upload_synthetic(
        self,
        hospital_id: str,
        dataset_id: str,
        *,
        table: bytes,
        report: bytes,
        plots: dict[str, bytes],
        timeout: float = UPLOAD_TIMEOUT_S,
    ) -> dict[str, Any]:
        """`POST /v1/catalogue/datasets/{hospital}/{dataset}/synthetic` (multipart: the
        Parquet table, report.json with the gate, the plots). Binary parts, not base64,
        because a large table would otherwise grow by a third on the wire."""
        url = f"{self.portal_url}/v1/catalogue/datasets/{hospital_id}/{dataset_id}/synthetic"
        files: list[tuple[str, tuple[str, bytes, str]]] = [
            ("table", ("synthetic.parquet", table, "application/vnd.apache.parquet")),
            ("report", ("report.json", report, "application/json")),
            *(("plots", (name, data, "image/png")) for name, data in sorted(plots.items())),
        ]
        resp = self._authed("POST", url, files=files, timeout=timeout)
        if resp.status_code not in (200, 201):
            raise PortalError(
                f"the portal refused the synthetic version of {dataset_id}: {resp.status_code} "
                f"{problem_detail(resp)}", resp.status_code)
        try:
            return resp.json()
        except ValueError:
            return {}

    def withdraw_synthetic(self, release_id: str, reason: str) -> dict[str, Any]:
        """`POST /v1/catalogue/synthetic/{release}/withdraw`: this hospital's release is
        no longer served (e.g. its consented cohort changed); the portal's summary of it."""
        url = f"{self.portal_url}/v1/catalogue/synthetic/{release_id}/withdraw"
        resp = self._authed("POST", url, json={"reason": reason})
        if resp.status_code != 200:
            raise PortalError(f"the portal refused to withdraw synthetic release {release_id}: "
                              f"{resp.status_code} {problem_detail(resp)}", resp.status_code)
        return resp.json()

    def run_ticket(self, flower_run_id: int) -> str:
        """`GET /v1/runs/flower/{id}/ticket`: the portal's signed ticket for a Flower run it
        submitted itself (404 when it did not: the run came from somewhere else)."""
        url = f"{self.portal_url}/v1/runs/flower/{flower_run_id}/ticket"
        resp = self._authed("GET", url, optional=not self.credentials)
        if resp.status_code != 200:
            raise PortalError(f"{url} answered {resp.status_code}: {problem_detail(resp)}",
                              resp.status_code)
        try:
            return str(resp.json()["ticket"])
        except (ValueError, KeyError, TypeError) as exc:
            raise PortalError(f"{url} did not answer a ticket") from exc

    def report_run_members(self, flower_run_id: int, dataset_id: str, tags: list[str]
                           ) -> dict[str, Any]:
        """`POST /v1/runs/flower/{id}/members`: membership tags of the people a run used
        here (`federation.node.participation`)."""
        url = f"{self.portal_url}/v1/runs/flower/{flower_run_id}/members"
        resp = self._authed("POST", url, json={"dataset_id": dataset_id, "tags": tags})
        if resp.status_code != 200:
            raise PortalError(f"{url} answered {resp.status_code}: {problem_detail(resp)}",
                              resp.status_code)
        return resp.json()

    def send_checkpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /v1/audit/checkpoints`: this node's signed audit chain head."""
        url = f"{self.portal_url}/v1/audit/checkpoints"
        resp = self._authed("POST", url, json=body)
        if resp.status_code != 201:
            raise PortalError(f"the portal refused the checkpoint: {resp.status_code} "
                              f"{problem_detail(resp)}", resp.status_code)
        return resp.json()

    def upload_audit_export(self, hospital_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /v1/audit/nodes/{hospital}/export`: this node's signed log, for auditors."""
        url = f"{self.portal_url}/v1/audit/nodes/{hospital_id}/export"
        resp = self._authed("POST", url, json=body, timeout=UPLOAD_TIMEOUT_S)
        if resp.status_code != 201:
            raise PortalError(f"the portal refused the audit export: {resp.status_code} "
                              f"{problem_detail(resp)}", resp.status_code)
        return resp.json()

    def revoked_permits(self, *, timeout: float | None = None) -> dict[str, list[str]]:
        """`GET /v1/permits/revoked`: `revoked` permit ids and `retired_keys` (permit keys
        whose signatures are refused). With the node's token when it has one; the list is
        public, so Keycloak out of reach does not stop the pull."""
        url = f"{self.portal_url}/v1/permits/revoked"
        resp = self._authed("GET", url, optional=True, timeout=timeout)
        if resp.status_code != 200:
            raise PortalError(f"{url} answered {resp.status_code}: {problem_detail(resp)}",
                              resp.status_code)
        try:
            body = resp.json()
            out = {"revoked": body["revoked"], "retired_keys": body.get("retired_keys", [])}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PortalError(f"{url} did not answer a revocation list: {exc}") from exc
        for name, value in out.items():
            if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
                raise PortalError(f"{url} answered {name!r} that is not a list of ids")
        return out

    def consent_snapshot(self, since: int) -> ConsentSnapshot:
        """`GET /v1/consents/snapshot?since=V&format=parquet`: the consents changed after
        registry version `since` (all of them when 0), metadata in X-Consent-* headers."""
        url = f"{self.portal_url}/v1/consents/snapshot"
        resp = self._authed("GET", url, params={"since": since, "format": "parquet"})
        if resp.status_code != 200:
            raise PortalError(f"{url} answered {resp.status_code}: {problem_detail(resp)}",
                              resp.status_code)
        try:
            total = resp.headers.get("X-Consent-Total")
            return ConsentSnapshot(pq.read_table(io.BytesIO(resp.content)),
                                   resp.headers["X-Consent-Kind"],
                                   int(resp.headers["X-Consent-Version"]),
                                   None if total is None else int(total))
        except (KeyError, ValueError, pa.ArrowException) as exc:
            raise PortalError(f"{url} sent an unreadable consent snapshot: {exc}",
                              resp.status_code) from exc

    def register_flower_key(self, hospital_id: str, public_key: str, *,
                            timeout: float | None = None) -> dict[str, Any]:
        """`PUT /v1/nodes/{hospital}/flower-key`: the portal registers this SuperNode's
        public key with the SuperLink; the registry row (with the Flower node id)."""
        url = f"{self.portal_url}/v1/nodes/{hospital_id}/flower-key"
        resp = self._authed("PUT", url, json={"public_key": public_key}, timeout=timeout)
        if resp.status_code != 200:
            raise PortalError(f"{url} answered {resp.status_code}: {problem_detail(resp)}",
                              resp.status_code)
        try:
            return resp.json()
        except ValueError as exc:
            raise PortalError(f"{url} did not answer JSON") from exc

    def reachable(self) -> tuple[bool, str]:
        """Whether the portal answers at all (any HTTP status counts as reachable)."""
        url = f"{self.portal_url}/v1/permit-keys"
        try:
            resp = self._request("GET", url, timeout=min(self.timeout, 3.0))
        except PortalError as exc:
            return False, str(exc)
        return True, f"HTTP {resp.status_code}"
