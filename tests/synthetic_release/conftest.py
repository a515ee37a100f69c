"""Fixtures of the synthetic-release tests: a node home holding the real breast-cancer
table (ingested through the node's own ingestion), synthesised once through the CLI,
and the real portal served over HTTP for the node's uploads."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from typer.testing import CliRunner

from federation.node.home import NodeHome
from federation.node.ingest import ingest_table
from federation.node.settings import StoredNodeSettings
from tests.consent.conftest import node_client
from tests.fixtures.portal import LivePortal
from tre.cli.main import app as cli_app

DATASET = "breast-cancer"
ROWS = 300


def breast_cancer_csv(path: Path) -> Path:
    """569 real patients: a local patient id (pseudonymised at ingestion), a unique
    specimen code (identifier-like text the synthesizer must leave out), 30 features
    and the diagnosis by name."""
    data = load_breast_cancer(as_frame=True)
    df = data.frame.drop(columns="target")
    df["diagnosis"] = data.target.map({0: "malignant", 1: "benign"})
    rng = np.random.default_rng(3)
    df.insert(0, "specimen_code", [f"SPC{v:08X}" for v in rng.choice(2**31, len(df), False)])
    df.insert(0, "patient_id", [f"BC-{i:05d}" for i in range(len(df))])
    df.to_csv(path, index=False)
    return path


def new_home(path: Path, hospital: str = "hospital-a") -> NodeHome:
    """A node home on a real DuckDB file (the portal URL is given to clients directly)."""
    return NodeHome.create(path, StoredNodeSettings(
        hospital_id=hospital, portal_url="http://127.0.0.1:9"), {"keys": []})


def cli(*args: str):
    """`tre node ...` in process; stdout and stderr kept apart."""
    return CliRunner().invoke(cli_app, ["node", *args], catch_exceptions=False)


@dataclass
class SynthesisedNode:
    home: NodeHome
    csv: Path
    output: str  # what `tre node synthesize` printed


@pytest.fixture(scope="module")
def synthesised(tmp_path_factory) -> SynthesisedNode:
    """hospital-a holding the breast-cancer table, synthesised with GaussianCopula."""
    root = tmp_path_factory.mktemp("synthetic-node")
    home = new_home(root / "home")
    csv = breast_cancer_csv(root / "breast_cancer.csv")
    ingest_table(home, csv, id_column="patient_id", dataset_id=DATASET,
                 title="Wisconsin breast cancer (FNA features)")
    result = cli("synthesize", DATASET, "--rows", str(ROWS), "--seed", "0",
                 "--consent-filter", "regime",
                 "--home", str(home.path))
    assert result.exit_code == 0, result.output + result.stderr
    return SynthesisedNode(home, csv, result.stdout)


@pytest.fixture
def live_portal(keycloak, tmp_path) -> Iterator[LivePortal]:
    server = LivePortal(keycloak, tmp_path / "portal").start()
    yield server
    server.stop()


@pytest.fixture
def client_for(keycloak, live_portal):
    """The node's real PortalClient with a hospital's real service account."""
    return lambda hospital="hospital-a": node_client(keycloak, live_portal.url, hospital)


def connect(home: NodeHome, portal_url: str, keycloak) -> None:
    """Point a node home at a live portal with hospital-a's real service account, as
    `tre node init` would: the CLI and the snapshot consent filter then reach it."""
    home.update_config(portal_url=portal_url, keycloak_url=keycloak.base_url,
                       keycloak_realm=keycloak.realm)
    creds = keycloak.client_credentials(home.config.hospital_id)
    home.save_credentials(creds["client_id"], creds["client_secret"])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_csv_bytes(data: bytes) -> pd.DataFrame:
    import io

    return pd.read_csv(io.BytesIO(data))
