"""Every error the API answers, in one shape: RFC 9457 problem details.

`type`, `title`, `status` and a one-line `detail` that names the problem; for invalid
input also `errors`, each with where it was (`in`: body, query, path or header) and a
JSON pointer into it. A rejected value is never echoed back: a NaN, an infinity or an
unpaired surrogate cannot be written as JSON, and the client has it anyway.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from tre.portal.errors import DomainError

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


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return problem(exc.status_code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_input(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(exc)
        detail = "; ".join(f"{e['in']}{e['pointer']}: {e['detail']}" for e in errors[:10])
        return problem(422, detail or "invalid input", errors=errors)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))
