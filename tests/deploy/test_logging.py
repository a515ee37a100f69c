"""Structured logs: every line JSON with time, level, logger, message; uvicorn's access
log included, from the real `tre portal serve`."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.net import free_port
from tre.core.logging import JsonFormatter

KEYS = {"time", "level", "logger", "message"}


@pytest.mark.unit
def test_json_formatter_keeps_extra_fields_and_exceptions() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tre.test.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("run %s refused", "r1", extra={"run_id": "r1", "node": "h1"})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first.keys() >= KEYS
    assert first["message"] == "run r1 refused" and first["level"] == "warning"
    assert first["logger"] == "tre.test.json"
    assert first["run_id"] == "r1" and first["node"] == "h1"
    assert "ValueError: boom" in second["exception"]


@pytest.mark.integration
def test_portal_serve_log_json_access_log(tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, TRE_KEYCLOAK_URL=f"http://127.0.0.1:{free_port()}")
    err = (tmp_path / "stderr.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tre.cli.main", "portal", "serve", "--log-json",
         "--port", str(port), "--state-dir", str(tmp_path / "state")],
        env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "stderr.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "portal did not start"
            time.sleep(0.2)
        time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        err.close()
    lines = [line for line in (tmp_path / "stderr.log").read_text().splitlines() if line.strip()]
    docs = [json.loads(line) for line in lines]  # every line is JSON
    assert all(d.keys() >= KEYS for d in docs)
    access = [d for d in docs if d["logger"] == "uvicorn.access" and d.get("path") == "/healthz"]
    assert access and access[-1]["status"] == 200 and access[-1]["method"] == "GET"
    assert any(d["logger"].startswith("uvicorn") and "startup" in d["message"].lower()
               for d in docs)
