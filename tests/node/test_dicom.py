"""DICOM ingestion over pydicom's bundled real files."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import duckdb
import numpy as np
import pydicom
import pytest

from federation.node.data import load_images
from federation.node.home import DB_FILE
from federation.node.ingest import ingest_dicom
from federation.node.ingest.dicom import instance_hex, read_instance
from tests.node.conftest import table_counts

pytestmark = pytest.mark.integration


def readable(path: Path) -> pydicom.Dataset | None:
    """What a plain pydicom read accepts: header parses and pixel data decodes."""
    ds, arr, reason, _ = read_instance(path)
    return ds if reason is None and arr is not None else None


def study_row(home, dataset_id: str, sop_uid: str):
    study_id = "st_" + instance_hex(home, dataset_id, sop_uid)
    with home.db.reader() as cur:
        rows = cur.execute(
            "SELECT modality, body_site, study_date, manufacturer, p.sex, p.birth_year,"
            " s.image_ref FROM imaging_study s JOIN person p USING (pseudonym)"
            " WHERE study_id = ?", [study_id]).fetchall()
    return rows[0] if rows else None


def test_every_readable_bundled_file_gives_a_row_with_its_modality(node, dicom_testdata):
    report = ingest_dicom(node, dicom_testdata, dataset_id="bundled")
    files = sorted(p for p in dicom_testdata.rglob("*") if p.is_file())
    skipped = {s.name: s for s in report.skipped}
    checked = 0
    modalities = set()
    for path in files:
        name = str(path.relative_to(dicom_testdata))
        ds = readable(path)
        if ds is None:
            assert name in skipped, f"{name} neither ingested nor reported"
            continue
        row = study_row(node, "bundled", ds.SOPInstanceUID)
        assert row is not None, f"{name}: readable but no row ({skipped.get(name)})"
        if name in skipped:  # the same instance in another encoding: one row for both
            assert skipped[name].reason == "duplicate instance"
        expected = (ds.get("Modality") or "").strip().upper() or None
        assert row[0] == expected, name
        modalities.add(row[0])
        checked += 1
    assert checked >= 50
    assert {"CT", "MR", "US", "NM", "OT"} <= modalities
    assert report.ingested + report.already_present + len(report.skipped) == len(files)


def test_header_fields_and_pixels(node, dicom_copy):
    folder = dicom_copy(["CT_small.dcm", "examples_overlay.dcm", "JPEG2000.dcm"])
    report = ingest_dicom(node, folder, dataset_id="d")
    assert report.ingested == 3 and not report.skipped
    ct = pydicom.dcmread(folder / "CT_small.dcm")
    modality, body_site, study_date, manufacturer, sex, birth_year, ref = study_row(
        node, "d", ct.SOPInstanceUID)
    assert modality == "CT" and manufacturer == ct.Manufacturer
    assert study_date.strftime("%Y%m%d") == ct.StudyDate
    assert sex == (ct.PatientSex or None)
    assert birth_year == (int(ct.PatientBirthDate[:4]) if ct.PatientBirthDate else None)
    mr = pydicom.dcmread(folder / "examples_overlay.dcm")
    row = study_row(node, "d", mr.SOPInstanceUID)
    assert row[0] == "MR" and row[1] == "ABDOMEN"
    nm = pydicom.dcmread(folder / "JPEG2000.dcm")
    assert study_row(node, "d", nm.SOPInstanceUID)[1] == "WHOLE BODY"
    with node.db.reader() as cur:
        h, w, c, f, dtype, pixels = cur.execute(
            "SELECT height, width, channels, frames, dtype, pixels FROM image WHERE image_ref = ?",
            [ref]).fetchall()[0]
    stored = np.frombuffer(pixels, dtype=np.dtype(dtype).newbyteorder("<")).reshape(h, w)
    assert (h, w, c, f) == (128, 128, 1, 1)
    assert np.array_equal(stored, ct.pixel_array)


@pytest.mark.parametrize("encoded", [
    "MR_small_RLE.dcm",            # RLE Lossless
    "MR_small_jp2klossless.dcm",   # JPEG 2000 lossless (pylibjpeg-openjpeg)
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless (pylibjpeg-libjpeg)
    "MR_small_bigendian.dcm",      # Explicit VR big endian
])
def test_compressed_syntaxes_decode_to_the_same_pixels(encoded, node, dicom_copy):
    plain = ingest_dicom(node, dicom_copy(["MR_small.dcm"], "plain"), dataset_id="plain")
    coded = ingest_dicom(node, dicom_copy([encoded], "coded"), dataset_id="coded")
    assert plain.ingested == coded.ingested == 1
    X0, _, _ = load_images(node.db, "plain", None, labelled_only=False, size=64)
    X1, _, _ = load_images(node.db, "coded", None, labelled_only=False, size=64)
    assert X0.shape == X1.shape == (1, 64, 64, 1)
    assert np.array_equal(X0, X1)


def test_lossy_and_colour_syntaxes(node, dicom_copy):
    names = ["SC_rgb_dcmtk_+eb+cy+np.dcm",  # JPEG baseline, YBR -> RGB
             "examples_ybr_color.dcm",      # US, JPEG baseline, 30 frames
             "SC_rgb_rle_2frame.dcm",       # RLE, 2 frames
             "JPGExtended.dcm"]             # JPEG extended 12-bit
    report = ingest_dicom(node, dicom_copy(names), dataset_id="colour")
    assert report.ingested == 4, report.skipped
    with node.db.reader() as cur:
        shapes = sorted(cur.execute(
            "SELECT s.modality, i.frames, i.height, i.width, i.channels FROM imaging_study s"
            " JOIN image i USING (image_ref) WHERE dataset_id = 'colour'").fetchall())
    assert ("US", 30, 240, 320, 3) in shapes
    assert ("OT", 2, 100, 100, 3) in shapes
    assert ("NM", 1, 1024, 256, 1) in shapes


def test_truncated_and_non_dicom_files_are_skipped_by_name(node, dicom_copy, tmp_path):
    folder = dicom_copy(["CT_small.dcm", "MR_truncated.dcm"])
    data = (folder / "CT_small.dcm").read_bytes()
    (folder / "half_ct.dcm").write_bytes(data[: len(data) // 2])
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "random.dcm").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "empty.dcm").write_bytes(b"")
    report = ingest_dicom(node, folder, dataset_id="mixed")
    assert report.ingested == 1
    reasons = {s.name: s.reason for s in report.skipped}
    assert reasons["notes.txt"] == "not a DICOM file"
    assert reasons["random.dcm"] == "not a DICOM file"
    assert reasons["empty.dcm"] == "not a DICOM file"
    assert reasons["MR_truncated.dcm"] == "truncated pixel data"
    assert reasons["half_ct.dcm"] in {"truncated pixel data", "unreadable DICOM"}
    assert "half_ct.dcm" in report.summary_line() or "skipped" in report.summary_line()


def test_rerun_adds_nothing(node, dicom_copy):
    folder = dicom_copy(["CT_small.dcm", "MR_small.dcm", "examples_rgb_color.dcm"])
    first = ingest_dicom(node, folder, dataset_id="d")
    before = table_counts(node)
    second = ingest_dicom(node, folder, dataset_id="d")
    after = table_counts(node)
    assert first.ingested == 3
    assert second.ingested == 0 and second.already_present == 3
    for table in ("person", "image", "imaging_study", "dataset", "clinical"):
        assert after[table] == before[table], table
    assert after["audit_log"] == before["audit_log"] + 1  # the attempt itself is audited


def test_failure_mid_batch_leaves_the_store_unchanged(node, dicom_copy):
    names = ["CT_small.dcm", "MR_small.dcm", "examples_overlay.dcm", "rtdose.dcm",
             "examples_rgb_color.dcm"]
    folder = dicom_copy(names)
    ingest_dicom(node, dicom_copy(["JPEG2000.dcm"], "earlier"), dataset_id="d")
    before = table_counts(node)
    # An invalid row at the end of the batch: the last file's image ref is already taken.
    last = sorted(folder.iterdir())[-1]
    ref = "im_" + instance_hex(node, "d", pydicom.dcmread(last).SOPInstanceUID)
    with node.db.transaction() as cur:
        cur.execute("INSERT INTO image (image_ref, height, width, channels, dtype, pixels)"
                    " VALUES (?, 1, 1, 1, 'uint8', '\\x00'::BLOB)", [ref])
    before["image"] += 1
    with pytest.raises(duckdb.ConstraintException):
        ingest_dicom(node, folder, dataset_id="d")
    assert table_counts(node) == before
    assert node.audit.verify().ok


def test_labels_csv_joins_by_file_or_uid(node, dicom_copy, tmp_path):
    folder = dicom_copy(["CT_small.dcm", "MR_small.dcm", "examples_overlay.dcm"])
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label,split\nCT_small.dcm,tumour,train\nMR_small.dcm,normal,val\n")
    report = ingest_dicom(node, folder, dataset_id="lab", labels_csv=labels)
    assert report.ingested == 3
    X, y, _ = load_images(node.db, "lab", "train", size=128)
    assert X.shape == (1, 128, 128, 1) and y.tolist() == [1]
    with node.db.reader() as cur:
        names = cur.execute("SELECT label_names FROM dataset WHERE dataset_id='lab'").fetchall()
    assert names[0][0] == '{"0": "normal", "1": "tumour"}'
    uid = pydicom.dcmread(folder / "examples_overlay.dcm").SOPInstanceUID
    by_uid = tmp_path / "by_uid.csv"
    by_uid.write_text(f"sop_instance_uid,label\n{uid},3\n")
    ingest_dicom(node, folder, dataset_id="uid", labels_csv=by_uid, split="test")
    _, y, _ = load_images(node.db, "uid", "test")
    assert y.tolist() == [3]


def _patient_ids(folder: Path) -> set[str]:
    ids = set()
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not DICOM
            continue
        pid = str(ds.get("PatientID") or "").strip()
        if pid:
            ids.add(pid)
    return ids


def _text_cells(home) -> list[str]:
    """Every non-null value of every non-pixel column of every table, as text (pixel
    blobs are numbers; the raw-bytes scan below covers them with long marked ids)."""
    out = []
    with home.db.reader() as cur:
        cols = cur.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'main' AND data_type <> 'BLOB'").fetchall()
        for table, column in cols:
            out += [r[0] for r in cur.execute(
                f'SELECT CAST("{column}" AS VARCHAR) FROM "{table}"'
                f' WHERE "{column}" IS NOT NULL').fetchall()]
    return out


def test_patient_id_appears_nowhere_in_the_store(node, dicom_testdata, dicom_copy, tmp_path):
    ingest_dicom(node, dicom_testdata, dataset_id="bundled")
    # Distinctive ids written into copies, so a scan of the raw file bytes is meaningful.
    folder = dicom_copy(["CT_small.dcm", "MR_small.dcm", "examples_rgb_color.dcm"], "marked")
    marked = {}
    for i, path in enumerate(sorted(folder.iterdir())):
        ds = pydicom.dcmread(path)
        ds.PatientID = f"HOSP-MRN-{i}-7f3a9c2e"
        ds.PatientName = f"DOE^JANE{i}"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.9.9999.{i}"
        ds.save_as(path)
        marked[ds.PatientID] = ds.PatientName
    assert ingest_dicom(node, folder, dataset_id="marked").ingested == 3
    ids = _patient_ids(dicom_testdata) | set(marked)
    assert len(ids) > 10
    cells = _text_cells(node)
    assert len(cells) > 500
    patterns = [re.compile(rf"(?<![0-9A-Za-z]){re.escape(i)}(?![0-9A-Za-z])") for i in ids]
    hits = [(p.pattern, c[:80]) for c in cells for p in patterns if p.search(c)]
    assert hits == []
    node.db.close()
    raw = b"".join(p.read_bytes() for p in node.path.glob(DB_FILE + "*"))
    for pid, name in marked.items():
        assert pid.encode() not in raw
        assert str(name).encode() not in raw


def test_loader_resamples_mixed_shapes_and_refuses_mixed_channels(node, dicom_copy):
    from federation.node.data import DataError

    ingest_dicom(node, dicom_copy(["CT_small.dcm", "MR_small.dcm"]), dataset_id="mixed")
    X, _, _ = load_images(node.db, "mixed", None, labelled_only=False)
    assert X.shape == (2, 28, 28, 1) and X.dtype == np.float32
    X, y, ps = load_images(node.db, "mixed", None)  # no labels: nothing to train on
    assert X.shape == (0, 0, 0, 0) and ps == []
    ingest_dicom(node, dicom_copy(["CT_small.dcm", "SC_rgb_rle_2frame.dcm"], "rgb"),
                 dataset_id="rgb")
    with pytest.raises(DataError, match=r"mixes images of \[1, 3\] channels"):
        load_images(node.db, "rgb", None, labelled_only=False)
