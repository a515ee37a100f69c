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


def serve_once(tmp_path: Path, *args: str) -> str:
    """`tre portal serve` until /healthz answers once; its stderr."""
    port = free_port()
    env = dict(os.environ, TRE_KEYCLOAK_URL=f"http://127.0.0.1:{free_port()}")
    env.pop("TRE_LOG_FORMAT", None)
    log_path = tmp_path / f"stderr{len(args)}.log"
    err = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tre.cli.main", "portal", "serve", *args,
         "--port", str(port), "--state-dir", str(tmp_path / "state")],
        env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log_path.read_text()
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
    return log_path.read_text()


@pytest.mark.integration
def test_portal_serve_logs_each_request_as_json_or_text(tmp_path: Path) -> None:
    lines = [line for line in serve_once(tmp_path, "--log-json").splitlines() if line.strip()]
    docs = [json.loads(line) for line in lines]  # every line is JSON
    assert all(d.keys() >= KEYS for d in docs)
    access = [d for d in docs if d["logger"] == "tre.portal.access"
              and d.get("route") == "/healthz"]
    assert access and access[-1]["status"] == 200 and access[-1]["method"] == "GET"
    assert access[-1]["principal"] == "-" and access[-1]["ms"] >= 0
    assert not [d for d in docs if d["logger"] == "uvicorn.access"]  # one request log
    assert any(d["logger"].startswith("uvicorn") and "startup" in d["message"].lower()
               for d in docs)
    text = serve_once(tmp_path)  # the default: text, still one line per request
    assert "tre.portal.access: GET /healthz 200" in text
