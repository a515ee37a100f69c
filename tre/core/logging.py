"""Structured logs: one JSON object per line (time, level, logger, message, extras).

Why: operators ship service logs to a collector (Loki, Elasticsearch, journald) that
indexes fields; JSON lines need no parsing rules and keep extra context (a run id, an
HTTP status) as fields instead of text. Plain text stays the default for a terminal.
`log_config` is a `logging.config.dictConfig` document, so it can also be handed to
uvicorn (`uvicorn.run(..., log_config=...)`), whose access log then comes out as JSON
with the request's method, path and status as fields.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
from datetime import UTC, datetime
from typing import Any

FORMAT_ENV = "TRE_LOG_FORMAT"
LEVEL_ENV = "TRE_LOG_LEVEL"

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "color_message", "taskName",
}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line; `extra=` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) \
                and len(record.args) == 5:
            client, method, path, http_version, status = record.args
            doc.update(client=client, method=method, path=path, http_version=http_version,
                       status=status)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in doc:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def wants_json(flag: bool | None = None) -> bool:
    """JSON when asked on the command line, else when TRE_LOG_FORMAT=json."""
    if flag:
        return True
    return os.environ.get(FORMAT_ENV, "").strip().lower() == "json"


def log_config(*, json_lines: bool, level: str = "info") -> dict[str, Any]:
    """A dictConfig for the root logger and uvicorn's loggers, all to stderr."""
    level = level.upper()
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"} if json_lines
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    handler = {"class": "logging.StreamHandler", "formatter": "default",
               "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            # uvicorn's loggers write through ours, once (propagate off).
            name: {"handlers": ["default"], "level": level, "propagate": False}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def configure(*, json_lines: bool, level: str = "info") -> dict[str, Any]:
    """Install the configuration in this process; returns it (to pass to uvicorn)."""
    config = log_config(json_lines=json_lines, level=level)
    logging.config.dictConfig(config)
    # a library's warning (e.g. a deprecation at import) is a log record like any other:
    # one JSON line under `py.warnings`, not a bare stderr line that breaks the stream
    logging.captureWarnings(True)
    return config
