"""PNG/JPEG folders and clinical tables into the common model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_breast_cancer

from federation.node.data import DataError, clinical_frame, load_images
from federation.node.ingest import IngestError, ingest_images, ingest_table
from tests.node.conftest import table_counts

pytestmark = pytest.mark.integration


@pytest.fixture
def png_folder(tmp_path, pneumonia_npz):
    """20 real PneumoniaMNIST test images as PNG (lossless) + 2 JPEG, with a labels CSV."""
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    with np.load(pneumonia_npz) as d:
        images, labels = d["test_images"][:22], d["test_labels"][:22, 0]
    rows = []
    for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
        name = f"sub/x{i:02d}.png" if i < 20 else f"x{i:02d}.jpg"
        Image.fromarray(img).save(folder / name)
        rows.append({"file": name, "label": ["normal", "pneumonia"][int(lab)],
                     "patient_id": f"P{i // 2}", "split": "test" if i % 2 else "train",
                     "sex": "F" if i % 3 else "M", "birth_year": 2015 + i % 4})
    csv = tmp_path / "labels.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return folder, csv, images, labels


def test_images_ingested_with_labels_and_patients(node, png_folder):
    folder, csv, images, labels = png_folder
    (folder / "stray.png").write_bytes(b"\x89PNG not really")
    report = ingest_images(node, folder, labels_csv=csv, dataset_id="xr", modality="cr",
                           body_site="chest")
    assert report.ingested == 22
    assert [(s.name, s.reason) for s in report.skipped] == [("stray.png", "not in labels CSV")]
    X, y, ps = load_images(node.db, "xr", "train")
    assert X.shape == (11, 28, 28, 1) and X.dtype == np.uint8
    assert len(set(ps)) == 11  # one train image per patient P0..P10
    # PNG is lossless: every train PNG comes back exactly.
    stored = {x[..., 0].tobytes() for x in X}
    assert {images[i].tobytes() for i in range(0, 20, 2)} <= stored
    with node.db.reader() as cur:
        names, = cur.execute("SELECT label_names FROM dataset WHERE dataset_id='xr'").fetchall()[0]
        assert json.loads(names) == {"0": "normal", "1": "pneumonia"}
        mods = cur.execute("SELECT DISTINCT modality, body_site FROM imaging_study").fetchall()
        assert mods == [("CR", "CHEST")]
        assert cur.execute("SELECT count(*) FROM person").fetchall()[0][0] == 11
    assert sorted(y.tolist()) == sorted(int(labels[i]) for i in range(0, 22, 2))


def test_image_problems_are_skipped_by_name_and_rerun_adds_nothing(node, png_folder, tmp_path):
    folder, csv, *_ = png_folder
    (folder / "x20.jpg").write_bytes(b"corrupt")
    frame = pd.read_csv(csv)
    frame.loc[len(frame)] = {"file": "gone.png", "label": "normal", "patient_id": "P99",
                             "split": "val", "sex": "M", "birth_year": 2016}
    frame.to_csv(csv, index=False)
    first = ingest_images(node, folder, labels_csv=csv, dataset_id="xr")
    reasons = {s.name: s.reason for s in first.skipped}
    assert reasons == {"x20.jpg": "unreadable image",
                       "gone.png": "listed in labels CSV but missing"}
    assert first.ingested == 21
    before = table_counts(node)
    second = ingest_images(node, folder, labels_csv=csv, dataset_id="xr")
    assert second.ingested == 0 and second.already_present == 21
    after = table_counts(node)
    assert {t: after[t] for t in ("image", "imaging_study", "person")} == {
        t: before[t] for t in ("image", "imaging_study", "person")}


def test_images_bad_labels_file(node, png_folder, tmp_path):
    folder, *_ = png_folder
    bad = tmp_path / "bad.csv"
    bad.write_text("name,diagnosis\na.png,1\n")
    with pytest.raises(IngestError, match="needs a 'label' column"):
        ingest_images(node, folder, labels_csv=bad, dataset_id="xr")
    with pytest.raises(IngestError, match="does not exist"):
        ingest_images(node, folder, labels_csv=tmp_path / "nope.csv", dataset_id="xr")


@pytest.fixture
def breast_csv(tmp_path):
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.copy()
    frame.insert(0, "mrn", [f"MRN{100000 + i}" for i in range(len(frame))])
    frame["diagnosis"] = frame["target"].map({0: "malignant", 1: "benign"})
    path = tmp_path / "breast.csv"
    frame.to_csv(path, index=False)
    return path, frame


def test_breast_cancer_table_round_trips(node, breast_csv):
    path, frame = breast_csv
    report = ingest_table(node, path, id_column="mrn", dataset_id="wdbc")
    assert report.ingested == 569 and not report.skipped
    wide = clinical_frame(node.db, "wdbc")
    assert len(wide) == 569
    assert list(wide.columns) == ["pseudonym", *[c for c in frame.columns if c != "mrn"]]
    assert wide["mean radius"].dtype == np.float64
    assert wide["diagnosis"].dtype == object
    expected = frame["mrn"].map(lambda m: node.pseudonymise(m))
    merged = wide.merge(frame.assign(pseudonym=expected), on="pseudonym", suffixes=("", "_src"))
    assert len(merged) == 569
    assert np.allclose(merged["mean radius"], merged["mean radius_src"])
    assert (merged["diagnosis"] == merged["diagnosis_src"]).all()
    with node.db.reader() as cur:
        assert cur.execute("SELECT count(*) FROM clinical WHERE variable = 'mrn'"
                           ).fetchall()[0][0] == 0
        cells = cur.execute("SELECT count(*) FROM clinical WHERE value_text LIKE 'MRN%'"
                            " OR pseudonym LIKE 'MRN%'").fetchall()[0][0]
        assert cells == 0
    again = ingest_table(node, path, id_column="mrn", dataset_id="wdbc")
    assert again.ingested == 0 and again.already_present == 569


def test_table_parquet_sex_birth_and_bad_rows(node, tmp_path):
    frame = pd.DataFrame({
        "pid": ["a", "b", "b", None, "c"],
        "sex": ["female", "M", "M", "F", "x"],
        "born": [1950, 1960, 1960, 1970, None],
        "hb": [12.5, 13.0, 13.0, 11.0, None],
        "smoker": [True, False, False, True, True],
        "note": ["x", "", "", "y", "z"],
    })
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    report = ingest_table(node, path, id_column="pid", dataset_id="t", sex_column="sex",
                          birth_year_column="born")
    assert report.ingested == 3
    assert sorted((s.name, s.reason) for s in report.skipped) == [
        ("row 3", "duplicate subject id"), ("row 4", "no subject id")]
    wide = clinical_frame(node.db, "t").set_index("pseudonym")
    assert list(wide.columns) == ["hb", "smoker", "note"]
    a, c = node.pseudonymise("a"), node.pseudonymise("c")
    assert wide.loc[a, "smoker"] == 1.0 and np.isnan(wide.loc[c, "hb"])
    with node.db.reader() as cur:
        people = dict((r[0], r[1:]) for r in cur.execute(
            "SELECT pseudonym, sex, birth_year FROM person").fetchall())
    assert people[a] == ("F", 1950) and people[c] == (None, None)


def test_table_errors(node, tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("id,x\n1,2\n")
    with pytest.raises(IngestError, match="--id-column 'pid' is not a column"):
        ingest_table(node, csv, id_column="pid", dataset_id="t")
    with pytest.raises(IngestError, match="does not exist"):
        ingest_table(node, tmp_path / "none.csv", id_column="id", dataset_id="t")
    with pytest.raises(IngestError, match="use a .csv or .parquet"):
        (tmp_path / "t.xlsx").write_text("x")
        ingest_table(node, tmp_path / "t.xlsx", id_column="id", dataset_id="t")
    ingest_table(node, csv, id_column="id", dataset_id="t")
    text = tmp_path / "t2.csv"
    text.write_text("id,x\n2,abc\n")
    before = table_counts(node)
    with pytest.raises(IngestError, match="'x' of t is numeric, not text"):
        ingest_table(node, text, id_column="id", dataset_id="t")
    assert table_counts(node) == before
    with pytest.raises(IngestError, match="dataset id"):
        ingest_table(node, csv, id_column="id", dataset_id="bad id!")
    with pytest.raises(DataError):
        clinical_frame(node.db, "nope")
