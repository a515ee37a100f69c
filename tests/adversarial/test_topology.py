"""Who can reach what: the Control API is the portal's alone, and nothing outlives its
starter.

A hospital operator's host reaches the SuperLink's published address; that address
must serve the Fleet API and nothing else, in the compose and Helm topologies as
rendered (no Docker engine or helm runs here) and in the processes `tre federation
superlink` really starts, which bind Control to loopback unless told otherwise.
`tre federation superlink` and `tre node serve` stop every process they started
when they are sent SIGTERM.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from access_control.permits import PermitKeyRing
from tests.deploy.test_manifests import COMPOSE, DEPLOY, crude_render
from tests.federation.helpers import make_home
from tests.fixtures.flower import free_port, wait_port
from tests.fixtures.processes import alive_mentioning, wait_gone

pytestmark = pytest.mark.integration


def _option(cmd: list[str], name: str) -> str:
    return str(cmd[cmd.index(name) + 1])


def test_compose_publishes_fleet_only_and_control_to_the_portal_alone() -> None:
    central = yaml.safe_load(COMPOSE["central"].read_text())
    hospital = yaml.safe_load(COMPOSE["hospital"].read_text())
    services = central["services"]
    link = services["superlink"]
    fleet, control = _option(link["command"], "--port"), _option(link["command"], "--control-port")
    assert fleet != control
    published = [str(p).split(":")[-1] for p in link.get("ports", [])]
    assert published == [fleet], published
    # everything that shares a network with the SuperLink (and could reach 9093 there)
    neighbours = {name for name, svc in services.items() if name != "superlink"
                  and set(svc.get("networks") or []) & set(link["networks"])}
    assert neighbours == {"portal"}, neighbours
    shared = set(services["portal"]["networks"]) & set(link["networks"])
    assert all(central["networks"][n].get("internal") for n in shared), shared
    assert services["portal"]["environment"]["TRE_SUPERLINK"].endswith(f":{control}")
    node = hospital["services"]["node"]["command"]
    assert _option(node, "--superlink").rstrip("}").endswith(f":{fleet}")


def test_helm_exposes_fleet_only_and_limits_control_to_the_portal() -> None:
    values = yaml.safe_load((DEPLOY / "helm" / "tre" / "values.yaml").read_text())["superlink"]
    docs = [d for d in yaml.safe_load_all(crude_render(
        (DEPLOY / "helm" / "tre" / "templates" / "superlink.yaml").read_text())) if d]
    services = [d for d in docs if d["kind"] == "Service"]
    public = [s for s in services if s["spec"]["type"] != "ClusterIP"]
    assert len(public) == 1 and [p["name"] for p in public[0]["spec"]["ports"]] == ["fleet"]
    assert values["service"]["type"] == "LoadBalancer" and values["port"] != values["controlPort"]
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    rules = policy["spec"]["ingress"]
    control = [r for r in rules if any(p["port"] == "control" for p in r.get("ports", []))]
    assert len(control) == 1 and control[0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "portal",
                                         "app.kubernetes.io/instance": "x"}}}]
    portal = (DEPLOY / "helm" / "tre" / "templates" / "portal.yaml").read_text()
    assert "-superlink-control:{{ .Values.superlink.controlPort }}" in portal


def _listeners(port: int) -> set[str]:
    """Local addresses listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.rsplit(":", 1)
            if state == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


def _terminate_and_check(proc: subprocess.Popen, marker: str) -> None:
    """SIGTERM the CLI process alone (not its group), as a service manager would."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    assert wait_gone(marker) == []


@pytest.mark.timeout(300)
def test_cli_binds_control_to_loopback_and_stops_everything_it_started(tmp_path: Path) -> None:
    tre = str(Path(sys.executable).with_name("tre"))
    fleet, control = free_port(), free_port()
    state = tmp_path / "superlink-state"
    link = subprocess.Popen([tre, "federation", "superlink", "--host", "0.0.0.0",
                             "--port", str(fleet), "--control-port", str(control),
                             "--state-dir", str(state), "--portal-url", "http://127.0.0.1:9"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    node = None
    try:
        wait_port(control, timeout_s=120, proc=link)
        wait_port(fleet, timeout_s=60, proc=link)
        assert _listeners(control) == {"0100007F"}  # 127.0.0.1 only, by default
        refused = httpx.post(f"http://127.0.0.1:{fleet}/v1/control/list-runs", content=b"")
        assert refused.status_code == 404
        forwarded = httpx.post(f"http://127.0.0.1:{fleet}/v1/fleet/get-run", content=b"x")
        assert "only the Fleet API" not in forwarded.text  # Flower itself answered

        home = make_home(tmp_path, "hospital-a", PermitKeyRing.load_or_create(
            tmp_path / "keys.json"))
        home.db.close()
        runtime = free_port()
        node = subprocess.Popen([tre, "node", "serve", "--home", str(home.path),
                                 "--superlink", f"127.0.0.1:{fleet}", "--port", str(runtime),
                                 "--consent-filter", "regime"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(runtime, timeout_s=120, proc=node)
        assert _listeners(runtime) == {"0100007F"}  # the SuperNode's runtime API
        assert len(alive_mentioning(str(home.path))) >= 2  # runtime and SuperNode
        _terminate_and_check(node, str(home.path))
        _terminate_and_check(link, str(state))
    finally:
        for proc in (node, link):
            if proc is not None and proc.poll() is None:
                proc.kill()
