"""Fixtures of the runs/feasibility tests: the real portal over HTTP pointed at a real
SuperLink, hospital node homes enrolled through the portal (their SuperNode keys
registered with the SuperLink), datasets published to the catalogue."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from federation.node.enrol import enrol, ensure_node_key
from federation.node.home import NodeHome, node_session
from federation.node.ledger import PrivacyLedger
from federation.node.serve import start_supernode
from federation.node.service import publish
from federation.node.settings import StoredNodeSettings
from federation.provision import provision
from federation.superlink import TLSFiles
from tests.federation.helpers import populate
from tests.fixtures.flower import FlowerCluster, free_port, stop_process, wait_port
from tests.fixtures.portal import LivePortal, bearer

HOSPITALS = ["hospital-a", "hospital-b", "hospital-c"]


@dataclass
class Federation:
    """Portal + SuperLink + enrolled node homes; SuperNodes started on demand."""

    keycloak: Any
    root: Path
    cluster: FlowerCluster
    portal: LivePortal | None = None
    homes: dict[str, Path] = field(default_factory=dict)
    node_ids: dict[str, int] = field(default_factory=dict)
    procs: dict[str, Any] = field(default_factory=dict)
    tls: dict[str, Any] = field(default_factory=dict)  # root_certificates, insecure

    def start_portal(self, port: int, **overrides: Any) -> LivePortal:
        """The portal on `port` (the SuperLink was told to report there), sealing run
        credentials to the SuperLink's report key."""
        self.overrides = {**getattr(self, "overrides", {}), **overrides,
                          "superlink_report_key": self.cluster.report_key}
        self.portal = LivePortal(self.keycloak, self.root / "portal", port=port,
                                 superlink=self.cluster.control, **self.overrides).start()
        return self.portal

    def restart_portal(self) -> LivePortal:
        """Stop the portal and start it again on the same state and port (nodes keep
        their portal URL); its startup recovery sees the runs it left."""
        assert self.portal is not None
        port = self.portal.port
        self.portal.stop()
        self.portal = LivePortal(self.keycloak, self.root / "portal", port=port,
                                 superlink=self.cluster.control, **self.overrides).start()
        return self.portal

    def permit(self, hospitals: list[str], **request: Any) -> dict[str, Any]:
        """A permit for alice on `hospitals`' pneumonia datasets, through the real review."""
        from federation.launch.fab import fab_hash
        from tests.fixtures.portal import request_body

        url = self.portal.url
        apps = httpx.get(f"{url}/v1/apps", headers=self.headers("alice")).json()
        if not any(a.get("app_id") == "tre-train" for a in apps):
            r = httpx.post(f"{url}/v1/apps", headers=self.headers("admin1"), json={
                "app_id": "tre-train", "app_hash": fab_hash(), "description": "DP CNN"})
            assert r.status_code == 201, r.text
        alice = self.headers("alice")
        body = request_body(app_id="tre-train", epsilon=8.0, datasets=[
            {"node_id": h, "dataset_id": "pneumonia"} for h in hospitals], **request)
        r = httpx.post(f"{url}/v1/requests", headers=alice, json=body)
        assert r.status_code == 201, r.text
        req = r.json()
        r = httpx.post(f"{url}/v1/requests/{req['id']}/submit", headers=alice)
        assert r.status_code == 200, r.text
        r = httpx.post(f"{url}/v1/requests/{req['id']}/reviews", headers=self.headers("rev1"),
                       json={"decision": "approve", "rationale": "sound and proportionate"})
        assert r.status_code in (200, 201), r.text
        decided = r.json()
        return httpx.get(f"{url}/v1/permits/{decided['permit_id']}", headers=alice).json()

    def start_run(self, permit_id: str, **body: Any) -> dict[str, Any]:
        r = httpx.post(f"{self.portal.url}/v1/runs", headers=self.headers("alice"), json={
            "permit_id": permit_id, "rounds": 1, "batch_size": 32, "epsilon": 2.0, **body},
            timeout=60)
        assert r.status_code == 202, r.text
        return r.json()

    def run_state(self, run_id: str) -> dict[str, Any]:
        r = httpx.get(f"{self.portal.url}/v1/runs/{run_id}", headers=self.headers("alice"),
                      timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def wait_run(self, run_id: str, timeout_s: float = 400) -> dict[str, Any]:
        return wait_for(lambda: (lambda s: s if s["state"] not in ("queued", "running")
                                 else None)(self.run_state(run_id)), timeout_s,
                        f"run {run_id} did not end; logs:\n{self.cluster.logs()}")

    def headers(self, user: str) -> dict[str, str]:
        return bearer(self.keycloak.token(user))

    def add_home(self, hospital: str, *, limit: int, index: int, enrol_node: bool = True,
                 budget: float = 20.0) -> Path:
        assert self.portal is not None
        jwks = httpx.get(f"{self.portal.url}/v1/permit-keys").json()
        home = NodeHome.create(self.root / "nodes" / hospital, StoredNodeSettings(
            hospital_id=hospital, portal_url=self.portal.url,
            keycloak_url=self.keycloak.base_url, keycloak_realm=self.keycloak.realm),
            jwks)
        creds = self.keycloak.client_credentials(hospital)
        home.save_credentials(creds["client_id"], creds["client_secret"])
        populate(home, "pneumonia", index, 3, limit=limit, regime="opt-out")
        PrivacyLedger(home.db, home.audit, actor="operator").set_budget("pneumonia", budget)
        publish(home, synthetic=False)
        ensure_node_key(home)
        if enrol_node:
            self.node_ids[hospital] = int(enrol(home)["node_id"])
        home.db.close()
        self.homes[hospital] = home.path
        return home.path

    def start_node(self, hospital: str, *, consent_filter: str = "snapshot") -> Any:
        port = free_port()
        home = self.homes[hospital]
        proc = start_supernode(home, self.cluster.superlink, port=port,
                               consent_filter=consent_filter,
                               node_key=home / "flower-node-key",
                               insecure=self.tls.get("insecure", True),
                               root_certificates=self.tls.get("root_certificates"),
                               log_path=self.cluster.root / f"supernode-{hospital}.log")
        self.procs[hospital] = proc  # stopped at the end even if it never opens its port
        wait_port(port, timeout_s=180, proc=proc)
        return proc

    def stop_node(self, hospital: str) -> None:
        stop_process(self.procs.pop(hospital))

    def audit_actions(self, hospital: str) -> list[str]:
        with node_session(self.homes[hospital]) as home:
            assert home.audit.verify().ok
            return [e.action for e in home.audit.entries()]

    def stop(self) -> None:
        for proc in self.procs.values():
            stop_process(proc)
        if self.portal is not None:
            self.portal.stop()


def refused_at_the_superlink(fed: Federation, handle: Any) -> None:
    """A run submitted around the portal (no results credential of the portal's) ends
    failed at the SuperLink's runtime, and no hospital hears of it."""
    from federation import launch

    status = wait_for(lambda: (lambda s: s if s and s.startswith("finished") else None)(
        launch.run_status(handle)), 180, "the run around the portal never ended")
    assert status == "finished:failed", status
    assert "carries no report credential" in (fed.cluster.root / "superlink.log").read_text()
    for hospital, path in fed.homes.items():
        with node_session(path) as home:
            touched = [e for e in home.audit.entries()
                       if e.object_id == f"flwr-{handle.run_id}"]
        assert touched == [], (hospital, touched)


def wait_for(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(what)


def start_secure_superlink(cluster: FlowerCluster, pki: Path, portal_url: str) -> str:
    """A SuperLink over TLS (our CA) that admits only registered SuperNode keys and
    reports to the portal at `portal_url`."""
    return cluster.start_superlink(portal_url=portal_url, insecure=False,
                                   tls=TLSFiles.in_dir(pki), supernode_auth=True)


@pytest.fixture
def federation(keycloak, tmp_path, monkeypatch) -> Iterator[Federation]:
    """The secure path on loopback: PKI from `provision`, a SuperLink with TLS and SuperNode
    authentication, the portal over HTTP driving it; node homes are added by the test.

    Flower 1.42 accepts a SuperNode key (the enrolment that maps node id to hospital)
    only over TLS, so every test of node selection runs here."""
    monkeypatch.setenv("TRE_KEYCLOAK_URL", keycloak.base_url)
    monkeypatch.setenv("TRE_KEYCLOAK_REALM", keycloak.realm)
    pki = provision(tmp_path / "pki", [])
    cluster = FlowerCluster(tmp_path / "flower")
    cluster.root.mkdir()
    portal_port = free_port()
    start_secure_superlink(cluster, pki.folder, f"http://127.0.0.1:{portal_port}")
    fed = Federation(keycloak, tmp_path, cluster,
                     tls={"insecure": False, "root_certificates": pki.ca_cert})
    # a round waits this long for a node that died before going on without it
    fed.start_portal(portal_port, superlink_insecure=False,
                     superlink_root_certificates=pki.ca_cert, run_round_timeout_s=150)
    try:
        yield fed
    finally:
        fed.stop()
        cluster.stop()
