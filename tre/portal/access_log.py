"""One line per request on stderr: method, route, status, milliseconds, principal.

The route is the template (`/v1/requests/{rid}`), not the path, so ids do not spread
into logs; the principal is the username the request acted as, or `-`. Text for people
(`TRE_LOG_FORMAT=text`, the default) or one JSON object per line for a log shipper.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from tre.portal.settings import LogFormat

LOGGER = "tre.portal.access"


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "request", {})
        return json.dumps({"time": self.formatTime(record), "level": record.levelname,
                           **fields}, sort_keys=True)


def install(app: FastAPI, log_format: LogFormat) -> None:
    log = logging.getLogger(LOGGER)
    if not log.handlers:  # one handler, however many apps a process creates
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLines() if log_format == "json" else logging.Formatter(
            "%(asctime)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = True

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
            log.info("%(method)s %(route)s %(status)s %(ms)sms %(principal)s", fields,
                     extra={"request": fields})
