"""Dataset descriptors: names, types and disclosed counts only."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from federation.node.descriptor import Cell, DatasetFacts, build_descriptor, publication_body
from federation.node.ingest import ingest_dicom, ingest_medmnist, ingest_table
from federation.node.query import run_query
from federation.node.service import descriptors
from tre.core.schemas import CohortFilter
from tre.portal.services.catalogue import check_suppressed


def _numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield value


@pytest.mark.unit
def test_builder_is_pure_and_discloses():
    facts = DatasetFacts(
        dataset_id="pneumonia", kind="imaging", title="Chest X-rays", consent_regime="opt-in",
        label_names={"0": "normal", "1": "pneumonia"},
        subjects=Cell(1952, 123), studies=Cell(1952, 123),
        splits={"train": {"normal": Cell(404, 5), "pneumonia": Cell(3, 9)}},
        split_totals={"train": Cell(407, 77)},
        modalities={"CR": Cell(1950, 1), "NM": Cell(2, 1)},
        body_sites={"CHEST": Cell(1952, 3)},
        image_shapes=[({"height": 28, "width": 28, "channels": 1, "frames": 1, "dtype": "uint8"},
                       Cell(1952, 3)),
                      ({"height": 512, "width": 512, "channels": 1, "frames": 1,
                        "dtype": "int16"}, Cell(1, 3))],
    )
    d = build_descriptor(facts, hospital_id="hospital-a")
    assert d == build_descriptor(facts, hospital_id="hospital-a")
    assert d["hospital_id"] == "hospital-a" and d["kind"] == "imaging"
    assert d["label_names"] == {"0": "normal", "1": "pneumonia"}
    assert d["splits"]["train"]["by_label"]["pneumonia"] == "<10"
    assert set(d["modalities"]) == {"CR"}  # a category under k is not even named
    assert len(d["image_shapes"]) == 1
    for n in _numbers(d["counts"]):
        assert n % 5 == 0 and n >= 10
    for n in _numbers(d["splits"]):
        assert n % 5 == 0 and n >= 10
    check_suppressed(d, 10)  # the portal's own defence-in-depth check accepts it
    body = publication_body(d)
    assert body == {"hospital_id": "hospital-a", "dataset_id": "pneumonia", "kind": "imaging",
                    "title": "Chest X-rays", "descriptor": d}


@pytest.mark.integration
def test_descriptors_from_a_node_hold_no_row_level_values(node, pneumonia_npz, dicom_copy,
                                                          tmp_path):
    ingest_medmnist(node, pneumonia_npz, dataset_id="pneumonia", partition=(1, 3))
    ingest_dicom(node, dicom_copy(["CT_small.dcm", "MR_small.dcm"]), dataset_id="scans")
    table = pd.DataFrame({"mrn": [f"M{i}" for i in range(30)],
                          "hb": [10 + i / 10 for i in range(30)],
                          "smoker": ["yes" if i % 2 else "no" for i in range(30)]})
    table.to_csv(tmp_path / "t.csv", index=False)
    ingest_table(node, tmp_path / "t.csv", id_column="mrn", dataset_id="labs")
    out = {d["dataset_id"]: d for d in descriptors(node)}
    assert set(out) == {"pneumonia", "scans", "labs"}
    pn = out["pneumonia"]
    assert set(pn["splits"]) == {"train", "val", "test"}
    assert pn["modalities"] == {"CR": pn["counts"]["subjects"]}
    assert pn["image_shapes"][0]["height"] == 28
    assert out["scans"]["counts"] == {"subjects": "<10", "studies": "<10"}
    assert out["scans"]["modalities"] == {} and out["scans"]["image_shapes"] == []
    labs = out["labs"]
    assert labs["clinical_variables"] == [{"name": "hb", "type": "numeric"},
                                          {"name": "smoker", "type": "text"}]
    assert labs["counts"]["subjects"] in (25, 30, 35)
    text = json.dumps(out)
    for forbidden in ["ps_", "st_", "im_", "M1", "10.5", "yes", "1CT1", "4MR1"]:
        assert forbidden not in text, forbidden
    for d in out.values():
        check_suppressed(d, 10)


@pytest.mark.integration
def test_every_published_count_counts_people_not_studies(node, pneumonia_npz):
    """Twelve 'OT' studies of three patients: a modality cell of three people, left out;
    the feasibility answer for a cohort of those three shows no study count either."""
    ingest_medmnist(node, pneumonia_npz, dataset_id="pneumonia", partition=(1, 3))
    with node.db.transaction() as cur:
        few = [r[0] for r in cur.execute(
            "SELECT DISTINCT pseudonym FROM imaging_study ORDER BY pseudonym LIMIT 3").fetchall()]
        studies = [r[0] for r in cur.execute(
            "SELECT study_id FROM imaging_study ORDER BY study_id LIMIT 12").fetchall()]
        for i, study in enumerate(studies):
            cur.execute("UPDATE imaging_study SET pseudonym = ?, modality = 'OT' "
                        "WHERE study_id = ?", [few[i % 3], study])
    pn = {d["dataset_id"]: d for d in descriptors(node)}["pneumonia"]
    assert "OT" not in pn["modalities"], pn["modalities"]
    assert "CR" in pn["modalities"]
    answer = run_query(node, CohortFilter(modality=["OT"]))
    cell = {d["dataset_id"]: d for d in answer["datasets"]}["pneumonia"]
    assert cell["subjects"] == "<10" and cell["studies"] == "<10", cell
