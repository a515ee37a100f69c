"""Fixtures of the consent tests: the real portal (in process, and over HTTP for
nodes), real Keycloak tokens, node homes on real DuckDB files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from federation.node.home import NodeHome
from federation.node.portal_client import PortalClient
from federation.node.settings import StoredNodeSettings
from tests.fixtures.portal import LivePortal, bearer


def pseudonym(tag: str) -> str:
    """A pseudonym shaped like the nodes' keyed hashes (`ps_` + 32 hex)."""
    return "ps_" + tag.encode().hex().ljust(32, "0")[:32]


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
    home = NodeHome.create(path, StoredNodeSettings(
        hospital_id=hospital, portal_url=portal_url, consent_max_age_s=max_age_s), {"keys": []})
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
