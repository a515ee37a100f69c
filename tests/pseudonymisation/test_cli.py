"""`tre pseudonymiser init | serve`: a key drawn once and kept, the service served from
its home, and one clear line with a non-zero exit for what cannot work."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from pseudonymisation.home import PseudonymiserHome
from tests.fixtures.net import free_port
from tre.cli.main import app

pytestmark = pytest.mark.integration


def cli(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, ["pseudonymiser", *args], env=env, catch_exceptions=False)


def one_line_error(result, *needles: str) -> None:
    assert result.exit_code != 0
    err = result.stderr.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_init_draws_a_private_key_once_and_keeps_it(tmp_path):
    home = tmp_path / "ps"
    first = cli("init", "--home", str(home))
    assert first.exit_code == 0 and "created a new OPRF key" in first.stdout
    key = (home / "oprf.key").read_bytes()
    assert stat.S_IMODE((home / "oprf.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    again = cli("init", "--home", str(home))
    assert again.exit_code == 0 and "kept the existing OPRF key" in again.stdout
    assert (home / "oprf.key").read_bytes() == key
    opened = PseudonymiserHome(home)
    assert [e.action for e in opened.audit.entries()] == ["key.create"]
    assert opened.key_id in again.stdout
    opened.close()


def test_serve_refuses_what_cannot_work(tmp_path):
    one_line_error(cli("serve", "--home", str(tmp_path / "none")),
                   "no pseudonymiser home", "tre pseudonymiser init")
    home = tmp_path / "ps"
    assert cli("init", "--home", str(home)).exit_code == 0
    one_line_error(cli("serve", "--home", str(home),
                       env={"TRE_PSEUDONYMISER_MAX_BATCH": "500",
                            "TRE_PSEUDONYMISER_RATE_PER_MINUTE": "100"}),
                   "max_batch 500 is above rate_per_minute 100")
    (home / "oprf.key").chmod(0o644)
    one_line_error(cli("serve", "--home", str(home)), "readable by others")
    (home / "oprf.key").chmod(0o600)
    (home / "oprf.key").write_text("not hex")
    one_line_error(cli("serve", "--home", str(home)), "does not hold an OPRF key")
    one_line_error(cli("serve", "--home", str(home), "--ssl-certfile", "x.pem"),
                   "--ssl-keyfile")


def test_serve_serves_from_its_home(tmp_path):
    home = tmp_path / "ps"
    assert cli("init", "--home", str(home)).exit_code == 0
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tre.cli.main", "pseudonymiser", "serve", "--home", str(home),
         "--port", str(port), "--keycloak-url", "http://127.0.0.1:1", "--realm", "tre"],
        env={**os.environ, "TRE_PSEUDONYMISER_MAX_BATCH": "77"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, health = time.monotonic() + 60, None
        while time.monotonic() < deadline and health is None and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).json()
            except httpx.HTTPError:
                time.sleep(0.2)
        opened = PseudonymiserHome(home)
        assert health is not None and health["max_batch"] == 77
        assert health["key_id"] == opened.key_id
        # a token the service cannot check (Keycloak unreachable) is refused, not served
        resp = httpx.post(f"http://127.0.0.1:{port}/v1/evaluate", json={"blinded": ["x"]},
                          headers={"Authorization": "Bearer abc.def.ghi"})
        assert resp.status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)
