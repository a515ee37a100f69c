"""The portal's problem details: the shared shape (`tre.core.problems`), its domain errors,
and an OpenAPI document in which every operation answers its errors as problems.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from tre.core.problems import MEDIA_TYPE, install_handlers, problem
from tre.portal.errors import DomainError

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
#: `responses=GONE` on a route whose object can be withdrawn: its shape cannot say so.
GONE: dict[int | str, dict[str, Any]] = {410: {"description": HTTPStatus.GONE.phrase}}
#: `responses=UNAVAILABLE` on a read that waits on another party (a citizen's view needs
#: the pseudonymisation service).
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"description": HTTPStatus.SERVICE_UNAVAILABLE.phrase}}


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
    """Every operation of an OpenAPI document answers its errors as problems: those its
    shape implies and those a route declares itself (e.g. `GONE`, `UNAVAILABLE`)."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Problem"] = PROBLEM_SCHEMA
    ref = {"$ref": "#/components/schemas/Problem"}
    for path, methods in doc.get("paths", {}).items():
        for method, operation in methods.items():
            declared = {int(s) for s in operation.get("responses", {})
                        if s.isdigit() and 400 <= int(s) < 600}
            for status in sorted(statuses(path, method, operation) | declared):
                operation.setdefault("responses", {})[str(status)] = {
                    "description": HTTPStatus(status).phrase,
                    "content": {MEDIA_TYPE: {"schema": ref}}}
    return doc


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return problem(exc.status_code, exc.message)

    install_handlers(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
