"""Real 16-bit DICOM from ingestion to a governed DP round (issue 17).

pydicom's bundled CT and MR files; where a test needs more persons (or a MONOCHROME1
image) it writes copies of those real files with another PatientID / SOPInstanceUID
(or photometric interpretation): the pixel data stays the scanner's.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from access_control.permits import PermitKeyRing
from federation.apps.tasks import NodeContext, train_task
from federation.launch.fab import fab_hash
from federation.launch.params import RunParams
from federation.node import schema
from federation.node.data import load_images
from federation.node.home import node_session
from federation.node.ingest import ingest_dicom
from federation.node.ingest.common import default_split
from federation.node.ingest.dicom import instance_hex
from federation.node.ledger import PrivacyLedger
from federation.training.data import images_to_tensor
from federation.training.pixels import CT_SOFT_TISSUE_WINDOW, PixelMeta, prepare_image
from tests.federation.helpers import Portal, claims, make_home, tickets_for
from tre.core.db import Database

pytestmark = pytest.mark.integration


def image_row(home, dataset_id: str, sop_uid: str) -> dict:
    ref = "im_" + instance_hex(home, dataset_id, sop_uid)
    with home.db.reader() as cur:
        rel = cur.sql("SELECT * FROM image WHERE image_ref = ?", params=[ref])
        rows = rel.fetchall()
        names = [d[0] for d in rel.description]
    assert len(rows) == 1, sop_uid
    return dict(zip(names, rows[0], strict=True))


def copy_as(source: Path, out: Path, *, patient_id: str | None = None,
            photometric: str | None = None) -> pydicom.Dataset:
    """A copy of a real file as another instance (new SOPInstanceUID), optionally of
    another patient or photometric interpretation; pixel data untouched."""
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(out)])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if patient_id is not None:
        ds.PatientID = patient_id
    if photometric is not None:
        ds.PhotometricInterpretation = photometric
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out)
    return ds


def test_ct_and_mr_pixels_stored_bit_identical_with_how_to_read_them(node, dicom_copy):
    folder = dicom_copy(["CT_small.dcm", "MR_small.dcm"])
    assert ingest_dicom(node, folder, dataset_id="d").ingested == 2
    for name in ("CT_small.dcm", "MR_small.dcm"):
        ds = pydicom.dcmread(folder / name)
        row = image_row(node, "d", ds.SOPInstanceUID)
        expected = ds.pixel_array
        assert expected.dtype == np.int16 and row["dtype"] == "int16"
        assert row["pixels"] == expected.astype("<i2").tobytes(), name
        assert row["photometric"] == "MONOCHROME2"
        assert row["transfer_syntax"] == ExplicitVRLittleEndian
    ct = image_row(node, "d", pydicom.dcmread(folder / "CT_small.dcm").SOPInstanceUID)
    assert (ct["rescale_slope"], ct["rescale_intercept"]) == (1.0, -1024.0)
    assert ct["window_center"] is None and ct["window_width"] is None
    mr = image_row(node, "d", pydicom.dcmread(folder / "MR_small.dcm").SOPInstanceUID)
    assert (mr["window_center"], mr["window_width"]) == (600.0, 1600.0)
    assert mr["rescale_slope"] is None


def test_training_values_come_from_hounsfield_units_in_float32(node, dicom_copy, tmp_path):
    folder = dicom_copy(["CT_small.dcm"])
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\nCT_small.dcm,1\n")
    ingest_dicom(node, folder, dataset_id="ct", labels_csv=labels, split="train")
    ds = pydicom.dcmread(folder / "CT_small.dcm")
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(
        ds.RescaleIntercept)
    assert hu.min() == -896 and hu.max() == 1167  # air-ish to bone: not an 8-bit range
    X, y, _ = load_images(node.db, "ct", "train", size=128)  # native size: no resampling
    assert X.dtype == np.float32 and X.shape == (1, 128, 128, 1) and y.tolist() == [1]
    c, w = CT_SOFT_TISSUE_WINDOW  # no window in the file, no chest: soft tissue
    lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    expected = np.clip((hu - lo) / (hi - lo), 0, 1) * 2 - 1
    np.testing.assert_allclose(X[0, ..., 0], expected, atol=1e-6)
    inside = (hu > lo) & (hu < hi)
    # Every HU level inside the window keeps its own value: 399 levels, not 256.
    assert len(np.unique(X[0, ..., 0][inside])) == len(np.unique(hu[inside])) > 256
    t = images_to_tensor(X)
    assert t.dtype.is_floating_point and float(t.min()) == -1.0 and float(t.max()) == 1.0


def test_monochrome1_is_inverted(node, dicom_testdata, tmp_path):
    folder = tmp_path / "mono"
    m2 = copy_as(dicom_testdata / "CT_small.dcm", folder / "m2.dcm")
    m1 = copy_as(dicom_testdata / "CT_small.dcm", folder / "m1.dcm", photometric="MONOCHROME1")
    ingest_dicom(node, folder, dataset_id="mono")
    assert image_row(node, "mono", m1.SOPInstanceUID)["photometric"] == "MONOCHROME1"
    with node.db.reader() as cur:
        refs = dict(cur.execute(
            "SELECT i.photometric, s.study_id FROM imaging_study s JOIN image i"
            " USING (image_ref)").fetchall())
    X, _, _ = load_images(node.db, "mono", None, labelled_only=False)
    order = sorted(refs, key=refs.get)  # load_images orders by study id
    x1, x2 = X[order.index("MONOCHROME1")], X[order.index("MONOCHROME2")]
    assert not np.allclose(x1, x2)
    np.testing.assert_allclose(x1, -x2, atol=1e-6)
    assert m2.SOPInstanceUID != m1.SOPInstanceUID


def test_non_square_resampled_to_28_letterboxed(node, dicom_copy):
    folder = dicom_copy(["JPEG2000.dcm"])  # NM whole body, 1024 rows × 256 columns
    ingest_dicom(node, folder, dataset_id="nm")
    X, _, _ = load_images(node.db, "nm", None, labelled_only=False, size=28)
    assert X.shape == (1, 28, 28, 1) and X.dtype == np.float32
    img = X[0, ..., 0]
    # 256/1024 of 28 columns carry the image (centred), the rest is black padding.
    assert np.all(img[:, :10] == -1.0) and np.all(img[:, -10:] == -1.0)
    assert img[:, 11:17].max() > -0.5
    # The same through the pipeline directly: antialiased (not decimated), so the
    # result equals an area-like average and differs from nearest-neighbour picking.
    ds = pydicom.dcmread(folder / "JPEG2000.dcm")
    direct = prepare_image(ds.pixel_array, PixelMeta(modality="NM"), size=28)
    np.testing.assert_allclose(direct[..., 0], img, atol=1e-6)


def test_multi_frame_gives_its_middle_frame(node, dicom_copy):
    folder = dicom_copy(["SC_rgb_rle_2frame.dcm"])
    ingest_dicom(node, folder, dataset_id="mf")
    X, _, _ = load_images(node.db, "mf", None, labelled_only=False, size=100)
    frames = pydicom.dcmread(folder / "SC_rgb_rle_2frame.dcm").pixel_array
    assert X.shape == (1, 100, 100, 3)
    np.testing.assert_allclose(X[0], frames[1].astype(np.float32) / 255 * 2 - 1, atol=1e-6)
    assert not np.allclose(X[0], frames[0].astype(np.float32) / 255 * 2 - 1)


def test_duplicate_instance_keeps_the_lossless_copy(node, dicom_copy):
    # Same SOPInstanceUID: JPEG baseline (lossy, sorts first by name) and uncompressed.
    lossy, lossless = "SC_rgb_dcmtk_+eb+cy+n2.dcm", "SC_ybr_full_422_uncompressed.dcm"
    folder = dicom_copy([lossy, lossless])
    report = ingest_dicom(node, folder, dataset_id="dup")
    assert report.ingested == 1
    assert [(s.name, s.reason) for s in report.skipped] == [(lossy, "duplicate instance")]
    ds = pydicom.dcmread(folder / lossless)
    row = image_row(node, "dup", ds.SOPInstanceUID)
    assert row["transfer_syntax"] == ExplicitVRLittleEndian
    assert row["pixels"] == np.ascontiguousarray(ds.pixel_array).tobytes()


def test_splits_assigned_per_person_by_default_and_split_overrides(node, dicom_testdata,
                                                                     tmp_path):
    folder = tmp_path / "people"
    for i in range(30):
        for name in ("CT_small.dcm", "MR_small.dcm"):
            copy_as(dicom_testdata / name, folder / f"p{i:02d}" / name, patient_id=f"P{i:02d}")
    assert ingest_dicom(node, folder, dataset_id="a").ingested == 60
    assert ingest_dicom(node, folder, dataset_id="b").ingested == 60

    def splits(dataset_id: str) -> dict[str, set[str]]:
        with node.db.reader() as cur:
            rows = cur.execute("SELECT pseudonym, split FROM imaging_study"
                               " WHERE dataset_id = ?", [dataset_id]).fetchall()
        out: dict[str, set[str]] = {}
        for p, s in rows:
            out.setdefault(p, set()).add(s)
        return out

    a = splits("a")
    assert len(a) == 30 and all(len(s) == 1 and None not in s for s in a.values())
    assert {next(iter(s)) for s in a.values()} == {"train", "val", "test"}
    assert splits("b") == a  # stable: same person, same split
    assert all(s == {default_split(p)} for p, s in a.items())
    ingest_dicom(node, folder, dataset_id="c", split="test")
    assert {next(iter(s)) for s in splits("c").values()} == {"test"}


def test_a_store_of_schema_2_upgrades(tmp_path):
    db = Database(tmp_path / "node.duckdb")
    assert db.migrate(schema.COMPONENT, schema.MIGRATIONS[:2]) == 2
    with db.transaction() as cur:
        cur.execute("INSERT INTO image (image_ref, height, width, channels, dtype, pixels)"
                    " VALUES ('im_old', 1, 2, 1, 'uint8', '\\x01\\x02'::BLOB)")
    assert db.migrate(schema.COMPONENT, schema.MIGRATIONS) == 3
    with db.reader() as cur:
        row = cur.execute("SELECT frames, pixels, photometric, rescale_slope, window_width,"
                          " transfer_syntax FROM image").fetchall()
    assert row == [(1, b"\x01\x02", None, None, None, None)]
    db.close()


def test_ct_and_mr_train_one_governed_round(tmp_path, dicom_testdata):
    """The issue's acceptance: 16-bit CT (and MR) ingested without --split, then one DP
    round through the governed train task, as the ClientApp runs it."""
    ring = PermitKeyRing.load_or_create(Path(tempfile.mkdtemp()) / "permit-keys.json")
    portal = Portal()
    try:
        home = make_home(tmp_path, "hospital-a", ring, portal=portal.url)
        folder = tmp_path / "pacs"
        rows = ["file,label"]
        # every third person has a second study: DP is planned and charged per person,
        # so a round trains on one image of each
        for i in range(40):
            name, label = ("CT_small.dcm", "ct") if i % 2 else ("MR_small.dcm", "mr")
            for copy in range(2 if i % 3 == 0 else 1):
                rel = f"p{i:02d}/{copy}-{name}"
                copy_as(dicom_testdata / name, folder / rel, patient_id=f"P{i:02d}")
                rows.append(f"{rel},{label}")
        labels = tmp_path / "labels.csv"
        labels.write_text("\n".join(rows) + "\n")
        report = ingest_dicom(home, folder, dataset_id="ctmr", labels_csv=labels)
        assert report.ingested == 54 and not report.skipped
        X, y, ps = load_images(home.db, "ctmr", "train")
        assert X.shape[1:] == (28, 28, 1) and X.dtype == np.float32
        assert 10 <= len(set(ps)) < len(ps) and set(y.tolist()) == {0, 1}
        PrivacyLedger(home.db, home.audit, actor="operator").set_budget("ctmr", 6.0)
        home.db.close()
        token = ring.sign(claims([("hospital-a", "ctmr")], eps=3.0))
        ctx = NodeContext(home=home.path, run_id="run-dicom", app_hash=fab_hash(),
                          run_tickets=tickets_for(ring, token))
        outcome = train_task(ctx, RunParams(permit=token, rounds=1, batch_size=16),
                             server_round=1, weights=None)
    finally:
        portal.close()
        with node_session(home.path) as h:
            read = h.audit.entries(action="data.read")[-1].details
    assert read["records"] == len(set(ps))  # one image per person, not one per study
    assert 0 < outcome.metrics["epsilon"] <= 3.0
    assert outcome.metrics["steps"] >= 1
    assert all(np.isfinite(w).all() for w in outcome.weights.values())
