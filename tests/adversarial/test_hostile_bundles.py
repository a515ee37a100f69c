"""A hostile bundle never runs at a hospital, even through a SuperLink that runs anything.

The attacker here is a curious SuperLink operator: they run Flower's own SuperLink
(`--isolation subprocess`), which executes whatever ServerApp a bundle names, so
every message of the bundle reaches the hospitals. Real SuperNodes with the node
runtime (`tre node serve`'s process) hold real node stores. What must hold is the
hospitals' side alone: no code of the bundle runs (no marker file), no record is
read, nothing of the bundle is unpacked under the node's home, and each node's
audit names the refused bundle by its hash.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from access_control.permits import PermitKeyRing
from federation import launch
from federation.launch.control import ControlAPI
from federation.launch.fab import fab_bytes
from federation.node.home import node_session
from federation.node.ledger import PrivacyLedger
from federation.node.serve import start_supernode
from federation.superlink import flower_env, tool
from tests.adversarial import hostile_fabs
from tests.federation.helpers import make_home, populate
from tests.fixtures.flower import free_port, stop_process, wait_port

pytestmark = pytest.mark.integration

HOSPITALS = ["hospital-a", "hospital-b", "hospital-c"]


@pytest.fixture
def curious_link(tmp_path: Path) -> Iterator[str]:
    """Flower's SuperLink as its operator might run it: it executes bundles' ServerApps."""
    port = free_port()
    log = (tmp_path / "curious-superlink.log").open("ab")
    proc = subprocess.Popen(
        [tool("flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(port),
         "--disable-runtime-dependency-installation"],
        env=flower_env(tmp_path / "curious-flwr"), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        wait_port(port, timeout_s=120, proc=proc)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc)
        log.close()


def _refusals(home: Path, run_id: int) -> list[dict]:
    with node_session(home) as h:
        return [e.details for e in h.audit.entries()
                if e.action == "app.refused" and e.object_id == f"flwr-{run_id}"]


@pytest.mark.timeout(900)
def test_hostile_bundles_are_refused_by_every_hospital(curious_link: str, tmp_path: Path
                                                       ) -> None:
    ring = PermitKeyRing.load_or_create(tmp_path / "portal-keys.json")
    marker = tmp_path / "markers"
    marker.mkdir()
    homes, procs = [], []
    for i, hospital in enumerate(HOSPITALS):
        home = make_home(tmp_path / "nodes", hospital, ring)
        populate(home, "pneumonia", i, 3, limit=60)
        PrivacyLedger(home.db, home.audit, actor="operator").set_budget("pneumonia", 10.0)
        home.db.close()
        homes.append(home.path)
    bundles = {
        "own-clientapp": (hostile_fabs.own_clientapp(tmp_path / "evil", marker),
                          "fab-carries-code"),
        "shadowing": (hostile_fabs.shadowing(tmp_path / "shadow", marker), "fab-carries-code"),
        "one-byte-off": (hostile_fabs.one_byte_off(tmp_path / "off-by-one"),
                         "app-not-approved"),
    }
    try:
        for home in homes:
            port = free_port()
            procs.append(start_supernode(home, curious_link, port=port, consent_filter="regime",
                                         log_path=tmp_path / f"node-{home.name}.log"))
            wait_port(port, proc=procs[-1])
        time.sleep(5)  # the SuperNodes register with the SuperLink
        nodes = ControlAPI(curious_link).online_nodes()
        assert len(nodes) == len(homes), nodes
        for name, (folder, code) in bundles.items():
            config = ({"node-map": json.dumps({f"h{i}": n for i, n in enumerate(sorted(nodes))})}
                      if name == "one-byte-off" else {})
            handle = launch.submit_app(curious_link, folder, config, tmp_path / "results" / name,
                                       credential=None)
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and not all(
                    _refusals(h, handle.run_id) for h in homes):
                time.sleep(1)
            digest = hashlib.sha256(fab_bytes(folder)).hexdigest()
            for home in homes:
                refused = _refusals(home, handle.run_id)
                assert refused, (name, home.name, (tmp_path / f"node-{home.name}.log")
                                 .read_text()[-3000:])
                assert {r["fab_hash"] for r in refused} == {digest}, (name, refused)
                assert {r["code"] for r in refused} == {code}, (name, refused)
            assert list(marker.iterdir()) == [], f"{name}: the bundle's code ran"
    finally:
        for proc in procs:
            stop_process(proc)
    for home in homes:
        with node_session(home) as h:
            actions = [e.action for e in h.audit.entries()]
            assert h.audit.verify().ok
            assert PrivacyLedger(h.db, h.audit, actor="t").charges() == []
        assert "data.read" not in actions and "privacy.reserve" not in actions, actions
        # nothing of any bundle was installed or unpacked at the node
        assert not (home / "flwr" / "apps").exists()
        assert not list(home.rglob("harmless")) and not list(home.rglob("client.py"))
