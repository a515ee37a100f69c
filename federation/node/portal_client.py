"""The node's HTTP client of the portal: pinning permit keys, publishing descriptors.

The portal's TLS certificate is checked against the CA pinned in the node home at
`tre node init --portal-ca` (else the system's CAs); plain http is for `--insecure`
development homes only.

The node authenticates as its Keycloak service account (client-credentials grant,
one client per hospital, role `node`); the portal decides from the token's
`hospital_id` what the node may publish. Failures become `PortalError` with a
message that names the URL and the portal's answer, for a one-line CLI error.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import httpx
from jwcrypto import jwk

from federation.node.home import NodeHome
from tre.core.settings import CommonSettings

DEFAULT_TIMEOUT_S = 10.0
#: Synthetic tables and plots are megabytes, not a descriptor's kilobytes.
UPLOAD_TIMEOUT_S = 120.0


#: Service-account tokens by (Keycloak URL, realm, client id, secret digest): (token, expiry).
_TOKENS: dict[tuple[str, str, str, str], tuple[str, float]] = {}


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
    ) -> None:
        settings = CommonSettings()
        self.portal_url = portal_url.rstrip("/")
        self.verify = verify  # the portal's TLS: a CA file, or the system's CAs
        self.keycloak_url = (keycloak_url or settings.keycloak_url).rstrip("/")
        self.realm = realm or settings.keycloak_realm
        self.credentials = credentials
        self.timeout = timeout

    @classmethod
    def for_home(cls, home: NodeHome, *, timeout: float = DEFAULT_TIMEOUT_S) -> PortalClient:
        """Keycloak URL from the node config (`extra.keycloak_url`), else $TRE_KEYCLOAK_URL."""
        cfg = home.config
        return cls(
            cfg.portal_url,
            keycloak_url=cfg.extra.get("keycloak_url") or os.environ.get("TRE_KEYCLOAK_URL"),
            realm=cfg.extra.get("keycloak_realm"),
            credentials=home.credentials(),
            timeout=timeout,
            verify=home.portal_verify,
        )

    # -- plumbing -------------------------------------------------------------------
    def _request(self, method: str, url: str, *, timeout: float | None = None,
                 **kwargs: Any) -> httpx.Response:
        """One call; the portal's certificate is checked with the node's pinned CA."""
        verify = self.verify if url.startswith(self.portal_url) else True
        try:
            return httpx.request(method, url, timeout=timeout or self.timeout, verify=verify,
                                 **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(url, exc) from exc

    def _unreachable(self, url: str, exc: Exception) -> PortalError:
        """What failed, and where to look next."""
        hint = ("is the portal running there, and is --portal-ca the CA of its certificate?"
                if url.startswith(self.portal_url) else
                "is Keycloak running there (--keycloak-url, node.toml keycloak_url)?")
        return PortalError(f"cannot reach {url}: {type(exc).__name__}: {exc}; {hint}")

    def access_token(self) -> str:
        """The service account's bearer token (client credentials), cached until near expiry
        for every client of the same account in this process (the node runtime serves
        many tasks: one token, not one per message)."""
        creds = self.credentials or {}
        secret = hashlib.sha256(creds.get("client_secret", "").encode()).hexdigest()
        key = (self.keycloak_url, self.realm, creds.get("client_id", ""), secret)
        cached = _TOKENS.get(key)
        if cached and cached[1] > time.time() + 30:
            return cached[0]
        if not self.credentials:
            raise PortalError(
                "no service-account credentials: set TRE_NODE_CLIENT_ID / TRE_NODE_CLIENT_SECRET"
                " or run `tre node init --credentials-file FILE`"
            )
        url = f"{self.keycloak_url}/realms/{self.realm}/protocol/openid-connect/token"
        resp = self._request(
            "POST", url, data={"grant_type": "client_credentials", **self.credentials}
        )
        if resp.status_code != 200:
            raise PortalError(
                f"Keycloak refused the node's credentials at {url}: {resp.status_code} "
                f"{problem_detail(resp)}", resp.status_code)
        body = resp.json()
        token = body["access_token"]
        _TOKENS[key] = (token, time.time() + float(body.get("expires_in", 60)))
        return token

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
        resp = self._request(
            "POST", url, json=body, headers={"Authorization": f"Bearer {self.access_token()}"}
        )
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
        headers = {"Authorization": f"Bearer {self.access_token()}"}
        try:
            resp = httpx.post(url, files=files, headers=headers, timeout=timeout,
                              verify=self.verify)
        except httpx.HTTPError as exc:
            raise self._unreachable(url, exc) from exc
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
        resp = self._request("POST", url, json={"reason": reason},
                             headers={"Authorization": f"Bearer {self.access_token()}"})
        if resp.status_code != 200:
            raise PortalError(f"the portal refused to withdraw synthetic release {release_id}: "
                              f"{resp.status_code} {problem_detail(resp)}", resp.status_code)
        return resp.json()

    def run_ticket(self, flower_run_id: int) -> str:
        """`GET /v1/runs/flower/{id}/ticket`: the portal's signed ticket for a Flower run it
        submitted itself (404 when it did not: the run came from somewhere else)."""
        url = f"{self.portal_url}/v1/runs/flower/{flower_run_id}/ticket"
        headers = ({"Authorization": f"Bearer {self.access_token()}"} if self.credentials
                   else {})
        resp = self._request("GET", url, headers=headers)
        if resp.status_code != 200:
            raise PortalError(f"{url} answered {resp.status_code}: {problem_detail(resp)}",
                              resp.status_code)
        try:
            return str(resp.json()["ticket"])
        except (ValueError, KeyError, TypeError) as exc:
            raise PortalError(f"{url} did not answer a ticket") from exc

    def send_checkpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /v1/audit/checkpoints`: this node's signed audit chain head."""
        url = f"{self.portal_url}/v1/audit/checkpoints"
        resp = self._request("POST", url, json=body,
                             headers={"Authorization": f"Bearer {self.access_token()}"})
        if resp.status_code != 201:
            raise PortalError(f"the portal refused the checkpoint: {resp.status_code} "
                              f"{problem_detail(resp)}", resp.status_code)
        return resp.json()

    def upload_audit_export(self, hospital_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /v1/audit/nodes/{hospital}/export`: this node's signed log, for auditors."""
        url = f"{self.portal_url}/v1/audit/nodes/{hospital_id}/export"
        resp = self._request("POST", url, json=body, timeout=UPLOAD_TIMEOUT_S,
                             headers={"Authorization": f"Bearer {self.access_token()}"})
        if resp.status_code != 201:
            raise PortalError(f"the portal refused the audit export: {resp.status_code} "
                              f"{problem_detail(resp)}", resp.status_code)
        return resp.json()

    def reachable(self) -> tuple[bool, str]:
        """Whether the portal answers at all (any HTTP status counts as reachable)."""
        url = f"{self.portal_url}/v1/permit-keys"
        try:
            resp = httpx.get(url, timeout=min(self.timeout, 3.0), verify=self.verify)
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return True, f"HTTP {resp.status_code}"
