"""Ingestion through the pseudonymisation service (DESIGN invariant 8).

Two hospitals' homes use the real service (real Keycloak tokens of their service
accounts): the same person gets the same pseudonym at both and the one a steward
derives; malformed identifiers are skipped by row number, never echoed; a node keeps
no identifier; an unreachable service stores nothing.
"""

from __future__ import annotations

import pandas as pd
import pydicom
import pytest

from federation.node.home import NodeHome
from federation.node.ingest import IngestError, ingest_dicom, ingest_images, ingest_table
from federation.node.settings import StoredNodeSettings
from pseudonymisation.identifiers import INS_NIR, TEST_PERSON, Identifier
from tests.fixtures.identifiers import ins_nir
from tests.node.conftest import table_counts

pytestmark = pytest.mark.integration


PEOPLE = [ins_nir(f"1850375123{i:03d}") for i in range(6)]


def federated_node(path, keycloak, service, hospital: str) -> NodeHome:  # noqa: ANN001
    home = NodeHome.create(path, StoredNodeSettings(
        hospital_id=hospital, portal_url="http://127.0.0.1:9", pseudonymiser_url=service.url,
        keycloak_url=keycloak.base_url, keycloak_realm=keycloak.realm),
        {"keys": []})
    creds = keycloak.client_credentials(hospital)
    home.save_credentials(creds["client_id"], creds["client_secret"])
    return home


def _csv(path, ids: list[str]):  # noqa: ANN001, ANN202
    pd.DataFrame({"ins": ids, "age": range(40, 40 + len(ids))}).to_csv(path, index=False)
    return path


def _pseudonyms(home: NodeHome) -> list[str]:
    with home.db.reader() as cur:
        return [r[0] for r in cur.execute(
            "SELECT pseudonym FROM clinical WHERE variable = 'age' ORDER BY value_num")
            .fetchall()]


def _bytes_under(root) -> bytes:  # noqa: ANN001
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def test_one_person_one_pseudonym_at_every_hospital(keycloak, tmp_path, make_pseudonymiser):
    service = make_pseudonymiser()
    a = federated_node(tmp_path / "a", keycloak, service, "hospital-a")
    b = federated_node(tmp_path / "b", keycloak, service, "hospital-b")
    ra = ingest_table(a, _csv(tmp_path / "a.csv", PEOPLE[:4]), id_column="ins",
                      id_system=INS_NIR, dataset_id="t")
    # hospital B writes the same INS with spaces, as it is printed on a card
    spaced = [f"{p[0]} {p[1:3]} {p[3:5]} {p[5:7]} {p[7:10]} {p[10:13]} {p[13:]}"
              for p in PEOPLE[2:]]
    rb = ingest_table(b, _csv(tmp_path / "b.csv", spaced), id_column="ins",
                      id_system=INS_NIR, dataset_id="t")
    assert ra.pseudonyms == rb.pseudonyms == "federation"
    assert "node-local" not in ra.summary_line()
    at_a, at_b = _pseudonyms(a), _pseudonyms(b)
    assert at_a[2:] == at_b[:2]  # the two shared people
    assert not set(at_a[:2]) & set(at_b[2:])
    steward = service.client(lambda: keycloak.token("steward1"))
    assert steward.pseudonyms([Identifier(INS_NIR, p) for p in PEOPLE[:4]]) == at_a
    # the node keeps no identifier: no INS in any byte of its home
    a.close()
    b.close()
    stored = _bytes_under(a.path) + _bytes_under(b.path)
    for p in PEOPLE:
        assert p.encode() not in stored and p[:13].encode() not in stored


def test_malformed_identifiers_are_skipped_by_row_never_echoed(keycloak, tmp_path,
                                                               make_pseudonymiser):
    service = make_pseudonymiser()
    home = federated_node(tmp_path / "a", keycloak, service, "hospital-a")
    wrong_key = PEOPLE[0][:13] + f"{(int(PEOPLE[0][13:]) + 1) % 97:02d}"
    report = ingest_table(home, _csv(tmp_path / "a.csv", [PEOPLE[1], wrong_key, "hello"]),
                          id_column="ins", id_system=INS_NIR, dataset_id="t")
    assert report.ingested == 1
    assert [s.name for s in report.skipped] == ["row 3", "row 4"]
    assert all(s.reason == "malformed subject id" for s in report.skipped)
    text = str(report.as_dict()) + str([e.details for e in home.audit.entries()])
    assert wrong_key not in text and wrong_key[:13] not in text and "hello" not in text


def test_a_federated_node_needs_a_known_identifier_system(keycloak, tmp_path,
                                                          make_pseudonymiser):
    service = make_pseudonymiser()
    home = federated_node(tmp_path / "a", keycloak, service, "hospital-a")
    csv = _csv(tmp_path / "a.csv", PEOPLE[:2])
    with pytest.raises(IngestError, match="--id-system"):
        ingest_table(home, csv, id_column="ins", dataset_id="t")
    with pytest.raises(IngestError, match="not a known identifier system"):
        ingest_table(home, csv, id_column="ins", id_system="urn:oid:9.9.9", dataset_id="t")
    assert table_counts(home)["person"] == 0


def test_an_unreachable_service_stores_nothing(keycloak, tmp_path, make_pseudonymiser):
    service = make_pseudonymiser()
    home = federated_node(tmp_path / "a", keycloak, service, "hospital-a")
    service.stop()
    with pytest.raises(IngestError, match="pseudonymisation service"):
        ingest_table(home, _csv(tmp_path / "a.csv", PEOPLE[:2]), id_column="ins",
                     id_system=INS_NIR, dataset_id="t")
    assert table_counts(home)["person"] == 0
    assert not [e for e in home.audit.entries() if e.action.startswith("ingest.")]


def test_dicom_and_images_through_the_service(keycloak, tmp_path, make_pseudonymiser,
                                              dicom_testdata, pneumonia_npz):
    import numpy as np
    from PIL import Image

    service = make_pseudonymiser()
    home = federated_node(tmp_path / "a", keycloak, service, "hospital-a")
    folder = tmp_path / "dcm"
    folder.mkdir()
    for i, name in enumerate(("CT_small.dcm", "MR_small.dcm")):
        ds = pydicom.dcmread(dicom_testdata / name)
        ds.PatientID = f"patient-{i}"
        ds.save_as(folder / name)
    anonymous = pydicom.dcmread(dicom_testdata / "CT_small.dcm")
    del anonymous.PatientID
    anonymous.SOPInstanceUID = "1.2.3.4.5.6.7"
    anonymous.save_as(folder / "no-id.dcm")
    report = ingest_dicom(home, folder, dataset_id="d", split="train", id_system=TEST_PERSON)
    assert report.ingested == 2
    assert [(s.name, s.reason) for s in report.skipped] == [("no-id.dcm",
                                                             "no usable PatientID")]
    expected = service.client(lambda: keycloak.token("steward1")).pseudonyms(
        [Identifier(TEST_PERSON, f"patient-{i}") for i in range(2)])
    with home.db.reader() as cur:
        stored = {r[0] for r in cur.execute("SELECT pseudonym FROM person").fetchall()}
    assert stored == set(expected)

    images = tmp_path / "imgs"
    images.mkdir()
    with np.load(pneumonia_npz) as d:
        pixels = d["test_images"][:3]
    for i, img in enumerate(pixels):
        Image.fromarray(img).save(images / f"x{i}.png")
    pd.DataFrame({"file": ["x0.png", "x1.png", "x2.png"], "label": [0, 1, 0],
                  "patient_id": ["patient-0", "", "bad id!"]}).to_csv(tmp_path / "l.csv",
                                                                      index=False)
    report = ingest_images(home, images, labels_csv=tmp_path / "l.csv", dataset_id="i",
                           id_system=TEST_PERSON)
    assert report.ingested == 1  # patient-0, the same person as the CT's
    assert sorted(s.name for s in report.skipped) == ["x1.png", "x2.png"]
    with home.db.reader() as cur:
        assert cur.execute("SELECT count(*) FROM person").fetchall()[0][0] == 2


def test_offline_nodes_say_that_pseudonyms_are_node_local(node, tmp_path):
    report = ingest_table(node, _csv(tmp_path / "a.csv", PEOPLE[:2]), id_column="ins",
                          dataset_id="t")
    assert report.pseudonyms == "node-local"
    assert "cannot be linked across hospitals" in report.summary_line()
    assert [e.details["pseudonyms"] for e in node.audit.entries()
            if e.action == "ingest.table"] == ["node-local"]
