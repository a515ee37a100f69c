"""The pseudonymisation service: evaluates the OPRF on blinded elements, nothing else.

It sees group elements that are uniformly random to it (the client's blinds), so it
learns neither identifiers nor pseudonyms; it hands out `skS · B`, never skS. Callers
are the federation's hospitals (`node` service accounts), consent stewards and the
portal (its `portal` service account, for a signed-in citizen), authenticated by the
realm's Keycloak and the one policy table. Each caller has a
token bucket of elements per minute, so no one can run a dictionary of identifiers
through it faster than the operator allows; every batch served or refused is one row
of the hash-chained audit log, with the caller and the count, never an element.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib.metadata import version

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from access_control.deps import require
from access_control.policy import Action
from access_control.tokens import Principal, TokenValidator
from pseudonymisation import oprf
from pseudonymisation.home import PseudonymiserHome
from pseudonymisation.settings import PseudonymiserSettings
from pseudonymisation.wire import decode, encode
from tre.core.audit import AuditAction
from tre.core.problems import BodySizeLimit, install_handlers, problem


class Refused(Exception):
    """A request the service answers with a 4xx problem (status, detail, per-item errors)."""

    def __init__(self, status: int, detail: str, *, errors: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.errors, self.headers = status, detail, errors, headers


class TokenBuckets:
    """One bucket per caller: holds `per_minute` elements, refills at per_minute / 60 s."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.per_second = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, caller: str, n: int) -> float:
        """Take n elements' worth; 0.0 when granted, else the seconds to wait first."""
        with self._lock:
            now = time.monotonic()
            tokens, at = self._buckets.get(caller, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.per_second)
            if tokens >= n:
                self._buckets[caller] = (tokens - n, now)
                return 0.0
            self._buckets[caller] = (tokens, now)
            return (n - tokens) / self.per_second


@dataclass
class Pseudonymiser:
    settings: PseudonymiserSettings
    home: PseudonymiserHome
    buckets: TokenBuckets = field(init=False)

    def __post_init__(self) -> None:
        self.buckets = TokenBuckets(self.settings.rate_per_minute)
        self.home.key  # noqa: B018 - refuse to start without a usable key

    def evaluate(self, caller: Principal, blinded: list[str]) -> list[str]:
        """skS · B for every blinded element B: size, then every element, then the
        caller's rate; one audit row for the batch served or the refusal by rate."""
        n = len(blinded)
        if n == 0:
            raise Refused(422, "blinded: give at least one element")
        if n > self.settings.max_batch:
            raise Refused(413, f"batch of {n} elements is above the limit of "
                               f"{self.settings.max_batch}: send smaller batches")
        elements, errors = [], []
        for i, text in enumerate(blinded):
            try:
                elements.append(decode(text))
            except oprf.OprfError as exc:
                errors.append({"in": "body", "pointer": f"/blinded/{i}", "detail": str(exc)})
        if errors:
            first = errors[0]
            raise Refused(422, f"{len(errors)} invalid element(s), the first at "
                               f"{first['pointer']}: {first['detail']}", errors=errors[:100])
        wait_s = self.buckets.take(caller.subject, n)
        if wait_s > 0:
            retry = math.ceil(wait_s)
            self._audit(caller, AuditAction.PSEUDONYM_REFUSE, n, reason="rate limit",
                        retry_after_s=retry)
            raise Refused(429, f"over the rate limit of {self.settings.rate_per_minute} "
                               f"elements per minute: retry in {retry} s",
                          headers={"Retry-After": str(retry)})
        key = self.home.key
        evaluated = [encode(oprf.blind_evaluate(key, e)) for e in elements]
        self._audit(caller, AuditAction.PSEUDONYM_EVALUATE, n)
        return evaluated

    def _audit(self, caller: Principal, action: AuditAction, count: int, **details: object) -> None:
        self.home.audit.record(
            actor=caller.username, action=action, object_type="caller",
            object_id=caller.subject,
            details={"count": count, "client_id": caller.client_id, **details})


class EvaluateRequest(BaseModel):
    blinded: list[str] = Field(description="blinded elements, base64url (RFC 9497 Blind)")


class EvaluateResponse(BaseModel):
    evaluated: list[str] = Field(description="skS · element, base64url, in request order")


class Health(BaseModel):
    status: str
    suite: str
    key_id: str
    max_batch: int
    rate_per_minute: int


def create_app(settings: PseudonymiserSettings | None = None) -> FastAPI:
    settings = settings or PseudonymiserSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        home = PseudonymiserHome(settings.home).require()
        app.state.pseudonymiser = Pseudonymiser(settings, home)
        try:
            yield
        finally:
            home.close()

    app = FastAPI(title="TRE pseudonymisation service", version=version("tre"),
                  description="Oblivious PRF (RFC 9497, ristretto255-SHA512) on blinded "
                  "identifiers: one pseudonym per person across the federation.",
                  lifespan=lifespan)
    app.state.settings = settings
    app.state.token_validator = TokenValidator(settings.issuer_url, settings.audience)
    install_handlers(app)

    @app.exception_handler(Refused)
    async def refused(_: Request, exc: Refused) -> JSONResponse:
        return problem(exc.status, exc.detail, errors=exc.errors, headers=exc.headers)

    def service(request: Request) -> Pseudonymiser:
        return request.app.state.pseudonymiser

    @app.get("/v1/health")
    def health(p: Pseudonymiser = Depends(service)) -> Health:
        """Public: the key's id (it changes if the key does) and the limits clients obey."""
        return Health(status="ok", suite=oprf.SUITE,
                      key_id=p.home.key_id, max_batch=settings.max_batch,
                      rate_per_minute=settings.rate_per_minute)

    @app.post("/v1/evaluate")
    def evaluate(body: EvaluateRequest,
                 caller: Principal = Depends(require(Action.PSEUDONYM_EVALUATE)),
                 p: Pseudonymiser = Depends(service)) -> EvaluateResponse:
        return EvaluateResponse(evaluated=p.evaluate(caller, body.blinded))

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app
