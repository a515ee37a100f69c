"""Fixtures of the node data-plane tests: a real portal over HTTP (for the permit
keys a node pins at enrolment), node homes on real DuckDB files, the real data."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.node.home import NodeHome
from federation.node.service import init_node
from federation.provision import provision
from tests.fixtures.portal import LivePortal
from tre.core.settings import CommonSettings


@pytest.fixture(scope="session")
def portal_server(tmp_path_factory) -> Iterator[LivePortal]:
    """The portal over HTTPS with a certificate of the federation's CA (nodes check it
    with `--portal-ca`). Keycloak is not needed for the public permit-keys route: it
    points at a closed port."""
    pki = provision(tmp_path_factory.mktemp("pki"), [])
    with LivePortal(None, tmp_path_factory.mktemp("portal"), tls=pki) as server:
        yield server


@pytest.fixture
def make_node(tmp_path, portal_server):
    """Create node homes enrolled with the real portal: make_node('H1') -> NodeHome."""

    def make(hospital_id: str = "hospital-a", **kwargs) -> NodeHome:
        return init_node(tmp_path / f"home-{hospital_id}", hospital_id=hospital_id,
                         portal_url=portal_server.url, portal_ca=portal_server.verify, **kwargs)

    return make


@pytest.fixture
def node(make_node) -> NodeHome:
    return make_node()


@pytest.fixture(scope="session")
def pneumonia_npz() -> Path:
    path = CommonSettings().data_root / "medmnist" / "pneumoniamnist.npz"
    assert path.is_file(), f"real data missing: {path} (see ../shared/data/README.md)"
    return path


@pytest.fixture(scope="session")
def dicom_testdata() -> Path:
    """pydicom's bundled test files (read in place, never written)."""
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("CT_small.dcm")).parent


@pytest.fixture
def dicom_copy(tmp_path, dicom_testdata):
    """Copy some bundled DICOM files into a fresh folder: dicom_copy(['CT_small.dcm'])."""

    def copy(names: list[str], folder: str = "dicom") -> Path:
        out = tmp_path / folder
        out.mkdir(exist_ok=True)
        for name in names:
            shutil.copy(dicom_testdata / name, out / name)
        return out

    return copy


def table_counts(home: NodeHome) -> dict[str, int]:
    """Rows per table of a node store (for 'nothing changed' assertions)."""
    with home.db.reader() as cur:
        tables = [r[0] for r in cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
        ).fetchall()]
        return {t: cur.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0] for t in tables}
