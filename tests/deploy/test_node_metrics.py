"""Node metrics: a real node home, a budget set and a run part-charged, scraped over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families

from federation.node import consent
from federation.node.home import NodeHome
from federation.node.ledger import PrivacyLedger
from federation.node.metrics import serve_metrics
from federation.node.settings import StoredNodeSettings
from tests.fixtures.net import free_port

pytestmark = pytest.mark.integration


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


@pytest.fixture
def node_home(tmp_path: Path) -> Path:
    """A node home with ε 3.0 on ds1 (1.0 reserved, 0.25 charged) and a consent snapshot."""
    home = NodeHome.create(tmp_path / "home", StoredNodeSettings(
        hospital_id="hospital-m", portal_url="http://127.0.0.1:9"),
                           {"keys": []})
    ledger = PrivacyLedger(home.db, home.audit, actor=home.actor)
    ledger.set_budget("ds1", 3.0)
    res = ledger.reserve(run_id="run-1", permit_id="permit-1", dataset_id="ds1", epsilon=1.0,
                         delta=1e-5, permit_epsilon_cap=2.0, accountant="rdp",
                         noise_multiplier=1.1, sample_rate=0.01, steps_per_round=10, rounds=4,
                         max_grad_norm=1.0)
    ledger.charge(res, round=1, steps=10, epsilon_run=0.25, noise_multiplier=1.1,
                  sample_rate=0.01)
    empty = pa.table({"consent_id": pa.array([], pa.string()), "subject": pa.array([], pa.string()),
                      "organisation": pa.array([], pa.string()),
                      "purposes": pa.array([], pa.list_(pa.string())),
                      "status": pa.array([], pa.string()),
                      "valid_from": pa.array([], pa.date32()),
                      "valid_to": pa.array([], pa.date32()),
                      "version": pa.array([], pa.int64())})
    consent.apply_snapshot(home, empty, kind="full", since=0, version=7,
                           portal_url="http://127.0.0.1:9", now=time.time() - 120)
    home.db.close()
    return home.path


def test_metrics_server_reports_budget_consent_and_audit(node_home: Path) -> None:
    port = free_port()
    server = serve_metrics(node_home, port)
    try:
        resp = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
    finally:
        server.shutdown()
    assert resp.status_code == 200
    got = samples(resp.text)
    ds = (("dataset", "ds1"), ("hospital", "hospital-m"))
    hosp = (("hospital", "hospital-m"),)
    assert got[("tre_node_store_up", ())] == 1
    assert got[("tre_node_epsilon_total", ds)] == 3.0
    assert got[("tre_node_epsilon_spent", ds)] == pytest.approx(0.25)
    assert got[("tre_node_epsilon_reserved", ds)] == pytest.approx(0.75)
    assert got[("tre_node_epsilon_remaining", ds)] == pytest.approx(2.0)
    assert got[("tre_node_active_runs", ds)] == 1
    assert 110 <= got[("tre_node_consent_snapshot_age_seconds", hosp)] < 600
    assert got[("tre_node_consent_snapshot_version", hosp)] == 7
    assert got[("tre_node_consent_snapshot_fresh", hosp)] == 1
    assert got[("tre_node_audit_rows", hosp)] >= 4  # budget, reserve, charge, consent sync
    # the store is not held between scrapes: another process can open it for writing
    subprocess.run([sys.executable, "-c", "import duckdb, sys; duckdb.connect(sys.argv[1]).close()",
                    str(node_home / "node.duckdb")], check=True, timeout=60)


def test_locked_store_reports_down_instead_of_hanging(node_home: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]);"
         " print('held', flush=True); time.sleep(60)", str(node_home / "node.duckdb")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        port = free_port()
        server = serve_metrics(node_home, port, lock_timeout_s=0.5)
        try:
            resp = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
        finally:
            server.shutdown()
    finally:
        holder.kill()
        holder.wait()
    got = samples(resp.text)
    assert got[("tre_node_store_up", ())] == 0
    assert not any(name == "tre_node_epsilon_total" for name, _ in got)


def test_node_serve_metrics_port(node_home: Path) -> None:
    """`tre node serve --metrics-port` serves the gauges beside the SuperNode process."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tre.cli.main", "node", "serve", "--home", str(node_home),
         "--superlink", f"127.0.0.1:{free_port()}", "--port", str(free_port()),
         "--metrics-port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        text = None
        while time.monotonic() < deadline and text is None:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
                text = r.text if "tre_node_epsilon_total" in r.text else None
            except httpx.HTTPError:
                assert proc.poll() is None, "tre node serve exited"
            time.sleep(0.3)
        assert text is not None, "no node metrics from tre node serve"
        got = samples(text)
        assert got[("tre_node_epsilon_total", (("dataset", "ds1"),
                                               ("hospital", "hospital-m")))] == 3.0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
