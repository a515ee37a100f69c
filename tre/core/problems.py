"""RFC 9457 problem details for every HTTP service of the project (portal, pseudonymiser).

`type`, `title`, `status` and a one-line `detail` that names the problem; for invalid
input also `errors`, each with where it was (`in`: body, query, path or header) and a
JSON pointer into it. A rejected value is never echoed back: a NaN, an infinity or an
unpaired surrogate cannot be written as JSON, and the client has it anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from re import Pattern
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MEDIA_TYPE = "application/problem+json"


def problem(status: int, detail: str, *, errors: list[dict[str, str]] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": HTTPStatus(status).phrase,
                            "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _pointer(parts: tuple[Any, ...]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def validation_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    out = []
    for error in exc.errors():
        where, *path = error.get("loc") or ("body",)
        out.append({"in": str(where), "pointer": _pointer(tuple(path)),
                    "detail": str(error.get("msg", "invalid"))})
    return out


def install_handlers(app: FastAPI) -> None:
    """Invalid input and HTTP errors answer as problems."""

    @app.exception_handler(RequestValidationError)
    async def invalid_input(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(exc)
        detail = "; ".join(f"{e['in']}{e['pointer']}: {e['detail']}" for e in errors[:10])
        return problem(422, detail or "invalid input", errors=errors)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


class BodySizeLimit:
    """Refuse bodies above the limit with 413 before anything reads them into memory.

    `larger` gives paths that take files (matched on the whole path) their own limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int,
                 larger: Sequence[tuple[Pattern[str], int]] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = tuple(larger)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = next((n for pattern, n in self.larger if pattern.match(scope["path"])),
                     self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, limit)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(send, limit)

    async def _reject(self, send: Send, limit: int) -> None:
        response = problem(413, f"request body is larger than the limit of {limit} bytes")
        await response({"type": "http"}, _no_receive, send)


class _TooLarge(Exception):
    pass


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
