"""One line per request: method, route, status, milliseconds, principal.

The route is the template (`/v1/requests/{rid}`), not the path, so ids do not spread
into logs; the principal is the username the request acted as, or `-`. The fields are
record extras, so `tre.core.logging` writes them as text or as JSON fields; this log
replaces uvicorn's access log, which knows neither the route nor the principal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

log = logging.getLogger("tre.portal.access")


def install(app: FastAPI) -> None:
    @app.middleware("http")
    async def log_request(request: Request,
                          call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = getattr(request.scope.get("route"), "path", None) or "(no route)"
            principal = getattr(request.state, "principal", None)
            fields = {"method": request.method, "route": route, "status": status,
                      "ms": round((time.perf_counter() - started) * 1000, 1),
                      "principal": getattr(principal, "username", None) or "-"}
            log.info("%s %s %s %sms %s", *fields.values(), extra=fields)
