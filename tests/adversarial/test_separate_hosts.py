"""Parties on separate hosts, not just separate folders (DESIGN §2.7).

The real SuperLink runs on a host of its own (a network namespace): Fleet published on
the shared bridge, Control on a link only the portal's host has. A hospital's host
reaches Fleet and has no route to Control; the portal's host gets answers from the
Control API. A party's processes see the other parties' state folders as empty and
read-only, so a party that reads another's files fails. Whatever happens in the body,
the hosts leave nothing behind: no namespace, bridge or veth of ours, no process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.processes import wait_gone
from tre.cli.hosts import HostsError, SeparateHosts, connects, links, namespaces, probe

PARTIES = ("portal", "superlink", "hospital-a", "hospital-b")
FLEET_PORT, CONTROL_PORT = 9092, 9093
ONLINE_NODES = ("import sys\nfrom federation.launch.control import ControlAPI\n"
                "print(sorted(ControlAPI(sys.argv[1]).online_nodes()))")


def _as(hosts: SeparateHosts, party: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*hosts.prefix(party), *argv], capture_output=True, text=True,
                          timeout=60)


def _ours(tag: str) -> list[str]:
    return sorted(n for n in namespaces() | links() if n.startswith(tag))


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_hospitals_reach_fleet_only_and_see_only_their_own_folder(tmp_path: Path) -> None:
    root = tmp_path / "hosts"
    tre = str(Path(sys.executable).with_name("tre"))
    with SeparateHosts(PARTIES, root) as hosts:
        tag = hosts.tag
        fleet, control = hosts.address("superlink"), hosts.control_address()
        with (tmp_path / "superlink.log").open("wb") as log:
            link = subprocess.Popen(
                [*hosts.prefix("superlink"), tre, "federation", "superlink",
                 "--host", fleet, "--port", str(FLEET_PORT), "--control-host", control,
                 "--control-port", str(CONTROL_PORT),
                 # where runs would report (no portal runs here: plain http, --insecure)
                 "--portal-url", f"http://{hosts.address('portal')}:8400",
                 "--state-dir", str(hosts.state_dir("superlink") / "flwr")],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while not connects(fleet, FLEET_PORT, hosts.prefix("hospital-a")):
            assert link.poll() is None, (tmp_path / "superlink.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the Fleet gateway never answered"
            time.sleep(0.5)

        # hospitals: Fleet answers, the Control API has no route at all
        for hospital in ("hospital-a", "hospital-b"):
            assert connects(fleet, FLEET_PORT, hosts.prefix(hospital))
            refused = probe(hosts.prefix(hospital), control, CONTROL_PORT)
            assert refused.returncode != 0 and "unreachable" in refused.stderr, refused.stderr
        # the portal: Flower's own Control client gets answers (no SuperNode connected)
        answer = _as(hosts, "portal", sys.executable, "-c", ONLINE_NODES,
                     f"{control}:{CONTROL_PORT}")
        assert answer.returncode == 0 and answer.stdout.strip() == "[]", answer.stderr[-2000:]
        # what the operator (and a hospital) reaches on the bridge serves Fleet only
        r = httpx.post(f"http://{fleet}:{FLEET_PORT}/v1/control/list-runs", content=b"")
        assert r.status_code == 404

        # files: a party's own folder is its alone
        secret = hosts.state_dir("hospital-a") / "secret.txt"
        wrote = _as(hosts, "hospital-a", "sh", "-c", f"echo a-only > {secret}")
        assert wrote.returncode == 0, wrote.stderr
        assert _as(hosts, "hospital-a", "cat", str(secret)).stdout == "a-only\n"
        for other in ("hospital-b", "portal", "superlink"):
            peek = _as(hosts, other, "cat", str(secret))
            assert peek.returncode != 0 and "a-only" not in peek.stdout, other
            assert _as(hosts, other, "ls", "-A", str(secret.parent)).stdout == "", other
            plant = _as(hosts, other, "sh", "-c", f"echo x > {secret.parent / 'planted'}")
            assert plant.returncode != 0 and "Read-only" in plant.stderr, other
        assert not (secret.parent / "planted").exists()
        # the SuperLink still runs: leaving the block must stop it
        assert link.poll() is None

    assert link.wait(30) is not None
    assert _ours(tag) == []
    assert wait_gone(str(root)) == []


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_nothing_is_left_when_the_body_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="a stage failed"), \
            SeparateHosts(("portal", "superlink", "hospital-a"), tmp_path) as hosts:
        tag = hosts.tag
        sleeper = subprocess.Popen([*hosts.prefix("hospital-a"), "sleep", "600"],
                                   start_new_session=True)
        assert _ours(tag)
        raise RuntimeError("a stage failed")
    assert sleeper.wait(10) is not None
    assert _ours(tag) == []
    hosts.close()  # idempotent


@pytest.mark.unit
def test_clear_errors_without_root_or_ip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    with monkeypatch.context() as m:
        m.setattr(os, "geteuid", lambda: 1000)
        with pytest.raises(HostsError, match="need root"):
            SeparateHosts(PARTIES, tmp_path)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    with pytest.raises(HostsError, match="iproute2"):
        SeparateHosts(PARTIES, tmp_path)
