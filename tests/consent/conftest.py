"""Fixtures of the consent tests: the real portal (in process, and over HTTP for
nodes), real Keycloak tokens, node homes on real DuckDB files."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from federation.node.home import NodeConfig, NodeHome
from federation.node.portal_client import PortalClient
from tests.fixtures.flower import flower_cluster  # noqa: F401 - the e2e test's fixture
from tests.fixtures.portal import bearer, portal_settings
from tre.portal.app import create_app


def pseudonym(tag: str) -> str:
    """A pseudonym shaped like the nodes' keyed hashes (`ps_` + 32 hex)."""
    return "ps_" + tag.encode().hex().ljust(32, "0")[:32]


class LivePortal:
    """The real portal app served by uvicorn on a loopback port, in a thread."""

    def __init__(self, keycloak, state_dir: Path) -> None:
        self.port = _free_port()
        self.settings = portal_settings(keycloak, state_dir, host="127.0.0.1", port=self.port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(self.settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LivePortal:
        self.thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("portal did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    @property
    def portal(self):
        return self.app.state.portal


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_portal(keycloak, tmp_path) -> Iterator[LivePortal]:
    server = LivePortal(keycloak, tmp_path / "live-portal").start()
    yield server
    server.stop()


@pytest.fixture
def steward(keycloak) -> Callable[[str], dict[str, str]]:
    """Authorization headers of a user (fresh token each call)."""
    return lambda user="steward1": bearer(keycloak.token(user))


def node_client(keycloak, portal_url: str, hospital: str = "hospital-a") -> PortalClient:
    """The node's real client of the portal with its real service-account credentials."""
    return PortalClient(portal_url, keycloak_url=keycloak.base_url, realm=keycloak.realm,
                        credentials=keycloak.client_credentials(hospital))


def make_node(path: Path, portal_url: str, *, hospital: str = "hospital-a",
              max_age_s: int = 3600) -> NodeHome:
    home = NodeHome.create(path, NodeConfig(hospital_id=hospital, portal_url=portal_url,
                                            consent_max_age_s=max_age_s), {"keys": []})
    return home


def add_dataset(home: NodeHome, dataset_id: str, regime: str, pseudonyms: list[str]) -> None:
    """A small imaging dataset in the node's common model (one study per subject)."""
    with home.db.transaction() as cur:
        cur.execute("INSERT INTO dataset (dataset_id, kind, title, source, consent_regime)"
                    " VALUES (?, 'imaging', ?, 'test', ?)", [dataset_id, dataset_id, regime])
        for i, p in enumerate(pseudonyms):
            cur.execute("INSERT INTO person (pseudonym) VALUES (?) ON CONFLICT DO NOTHING", [p])
            cur.execute("INSERT INTO imaging_study (study_id, dataset_id, pseudonym, modality,"
                        " label, split) VALUES (?, ?, ?, 'CR', ?, 'train')",
                        [f"st_{dataset_id}_{i}", dataset_id, p, i % 2])
