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
from fastapi.openapi.utils import get_openapi
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


PROBLEM_SCHEMA = {
    "type": "object", "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"},
        "status": {"type": "integer"}, "detail": {"type": "string"},
        "errors": {"type": "array", "items": {
            "type": "object", "required": ["in", "pointer", "detail"],
            "properties": {"in": {"type": "string"}, "pointer": {"type": "string"},
                           "detail": {"type": "string"}}}},
    },
    "example": {"type": "about:blank", "title": "Unprocessable Entity", "status": 422,
                "detail": "body/epsilon: Input should be a finite number",
                "errors": [{"in": "body", "pointer": "/epsilon",
                            "detail": "Input should be a finite number"}]},
}
WRITES = frozenset({"post", "put", "patch", "delete"})


def statuses(path: str, method: str, operation: dict[str, Any]) -> set[int]:
    """The error statuses an operation can answer, from its shape: invalid input where
    it takes any, 401/403 where it needs a credential, 404 where a path names an object,
    409 where a write meets an object's state, 400 (a body that is not JSON text) and
    413 where it takes a body, 503 where it waits on another party (the SuperLink)."""
    out = set()
    if operation.get("parameters") or operation.get("requestBody"):
        out.add(422)
    if operation.get("security"):
        out |= {401, 403}
        if method in WRITES:
            out |= {409, 503}
    if "{" in path:
        out.add(404)
    if operation.get("requestBody"):
        out |= {400, 413}
    return out


def document(doc: dict[str, Any]) -> dict[str, Any]:
    """Every operation of an OpenAPI document answers its errors as problems."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Problem"] = PROBLEM_SCHEMA
    ref = {"$ref": "#/components/schemas/Problem"}
    for path, methods in doc.get("paths", {}).items():
        for method, operation in methods.items():
            for status in sorted(statuses(path, method, operation)):
                operation.setdefault("responses", {})[str(status)] = {
                    "description": HTTPStatus(status).phrase,
                    "content": {MEDIA_TYPE: {"schema": ref}}}
    return doc


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

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
