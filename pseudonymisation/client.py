"""The client every party uses to turn identifiers into federation pseudonyms.

Normalisation, blinding and finalisation happen here, on the caller's side: only
blinded elements cross the network, so the service never sees an identifier and an
eavesdropper learns nothing; the caller never sees the key. Hospitals use it at
ingestion, stewards when they record a person's consent, the portal when a citizen
signs in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import httpx

from pseudonymisation import oprf
from pseudonymisation.identifiers import Identifier, pseudonym
from pseudonymisation.wire import decode, encode


class PseudonymisationError(Exception):
    """The service could not be reached or refused; the message is the service's own.
    `status` is the HTTP status (None when unreachable), `retry_after_s` set on 429."""

    def __init__(self, message: str, *, status: int | None = None,
                 retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class PseudonymClient:
    """`pseudonyms([...])` through the service at `base_url`; `token()` gives a fresh
    bearer token of the realm (a node's client-credentials token, a steward's login)."""

    def __init__(self, base_url: str, token: Callable[[], str], *, verify: str | bool = True,
                 timeout_s: float = 60.0, batch_size: int | None = None,
                 http: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._http = http or httpx.Client(verify=verify, timeout=timeout_s)
        self._batch_size = batch_size

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PseudonymClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self) -> dict:
        """The service's suite, key id and limits (public, no token)."""
        return self._answer(self._call("GET", "/v1/health"))

    @property
    def batch_size(self) -> int:
        """Elements per request: the service's limit unless told fewer."""
        if self._batch_size is None:
            self._batch_size = int(self.health()["max_batch"])
        return self._batch_size

    def pseudonyms(self, identifiers: Sequence[Identifier]) -> list[str]:
        """The federation pseudonym of each identifier, in order. One person listed
        twice (two rows of one table) is evaluated once."""
        inputs = list(dict.fromkeys(i.canonical() for i in identifiers))
        if not inputs:
            return []
        out: dict[bytes, str] = {}
        size = self.batch_size
        for start in range(0, len(inputs), size):
            chunk = inputs[start:start + size]
            blinds, blinded = zip(*(oprf.blind(data) for data in chunk), strict=True)
            evaluated = self.evaluate([encode(b) for b in blinded])
            if len(evaluated) != len(chunk):
                raise PseudonymisationError(
                    f"the service answered {len(evaluated)} elements for {len(chunk)}")
            for data, r, text in zip(chunk, blinds, evaluated, strict=True):
                try:
                    out[data] = pseudonym(oprf.finalize(data, r, decode(text)))
                except oprf.OprfError as exc:
                    raise PseudonymisationError(f"the service answered an invalid element: "
                                                f"{exc}") from exc
        return [out[i.canonical()] for i in identifiers]

    def evaluate(self, blinded: list[str]) -> list[str]:
        """One POST /v1/evaluate of already blinded elements (base64url)."""
        resp = self._call("POST", "/v1/evaluate", json={"blinded": blinded},
                          headers={"Authorization": f"Bearer {self._token()}"})
        body = self._answer(resp)
        evaluated = body.get("evaluated") if isinstance(body, dict) else None
        if not isinstance(evaluated, list):
            raise PseudonymisationError("the service's answer has no `evaluated` list")
        return evaluated

    def _call(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        try:
            return self._http.request(method, self.base_url + path, **kwargs)
        except httpx.HTTPError as exc:
            raise PseudonymisationError(
                f"cannot reach the pseudonymisation service at {self.base_url}: {exc}") from exc

    @staticmethod
    def _answer(resp: httpx.Response) -> dict:
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.is_success and isinstance(body, dict):
            return body
        detail = body.get("detail") if isinstance(body, dict) else None
        retry = resp.headers.get("Retry-After", "")
        raise PseudonymisationError(
            f"pseudonymisation service: {detail or resp.reason_phrase} ({resp.status_code})",
            status=resp.status_code, retry_after_s=int(retry) if retry.isdigit() else None)
