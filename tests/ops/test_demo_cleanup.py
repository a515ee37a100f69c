"""`tre demo` stops what it started when a stage fails (CI's run of the whole demo checks
the same after a successful `--exit`: .ci/run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.processes import wait_gone

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(600)
def test_a_failed_stage_leaves_no_process_of_the_demo(tmp_path: Path) -> None:
    """No data where the demo looks for it: the `nodes` stage fails after Keycloak, the
    SuperLink (with its gateway and runtime) and the portal are up."""
    state = tmp_path / "demo"
    empty = tmp_path / "no-data"
    empty.mkdir()
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("tre")), "demo", "--exit", "--state-dir",
         str(state), "--json", str(tmp_path / "summary.json")],
        env={**os.environ, "TRE_DATA_ROOT": str(empty)}, capture_output=True, text=True,
        timeout=540)
    assert proc.returncode != 0
    assert "stage 'nodes' failed" in proc.stderr + proc.stdout, proc.stderr[-2000:]
    assert (state / "logs" / "superlink.log").exists()  # it got that far
    assert wait_gone(str(state)) == []
