"""What every benchmark records beside its figures: the machine, the command, the date."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    mem_gib = None
    try:
        with open("/proc/meminfo") as f:
            kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
            mem_gib = round(kib / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    return {"cpus": os.cpu_count(), "memory_gib": mem_gib, "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version()}


def _context() -> dict[str, Any]:
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(["python", *sys.argv]), "machine": machine()}


def write_result(name: str, figures: dict[str, Any], *, keep: tuple[str, ...] = ()) -> Path:
    """bench/results/<name>.json with the figures and their context; `keep`: keys of the
    file as it was to carry over (figures of a mode run apart: `update_result`)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    old = json.loads(path.read_text()) if keep and path.exists() else {}
    doc = {"benchmark": name, **_context(), **figures,
           **{k: old[k] for k in keep if k in old}}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path


def update_result(name: str, key: str | tuple[str, ...], figures: dict[str, Any], *,
                  keep: tuple[str, ...] = ()) -> Path:
    """Set `key` of bench/results/<name>.json (a tuple: a path into nested sections) to
    the figures with their own context, keeping every other key: for a bench mode run
    apart from the rest of its bench. `keep`: keys of the value it replaces to carry
    over (a section another mode writes inside it)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    doc = json.loads(path.read_text()) if path.exists() else {"benchmark": name}
    *outer, last = (key,) if isinstance(key, str) else key
    section = doc
    for k in outer:
        section = section.setdefault(k, {})
    old = section.get(last, {})
    section[last] = {**_context(), **figures, **{k: old[k] for k in keep if k in old}}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path


@contextmanager
def local_keycloak() -> Iterator[Any]:
    """The local Keycloak a bench talks to: the one already running, or one started for
    the bench and stopped after it (also when the bench fails)."""
    from access_control.keycloak import server as kc_server

    server, started = kc_server.ensure_running(install_java=True)
    try:
        yield server
    finally:
        if started:
            server.stop()
