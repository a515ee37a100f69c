"""MedMNIST ingestion: rows, idempotency, rollback, the loader the trainers use."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest

from federation.node.data import load_images
from federation.node.ingest import ingest_medmnist
from federation.node.ingest.medmnist import image_hexes, local_id
from federation.node.partition import partition_indices
from tests.node.conftest import table_counts

pytestmark = pytest.mark.integration


def test_rows_follow_the_common_model(node, pneumonia_npz):
    report = ingest_medmnist(node, pneumonia_npz, dataset_id="pneumonia", partition=(1, 2),
                             seed=5)
    with node.db.reader() as cur:
        ds = cur.execute("SELECT kind, consent_regime, label_names FROM dataset").fetchall()[0]
        studies = cur.execute(
            "SELECT DISTINCT modality, body_site, study_date, manufacturer FROM imaging_study"
        ).fetchall()
        persons = cur.execute(
            "SELECT count(*), count(sex), count(birth_year) FROM person").fetchall()[0]
        images = cur.execute(
            "SELECT DISTINCT height, width, channels, frames, dtype, octet_length(pixels)"
            " FROM image").fetchall()
    assert ds == ("imaging", "opt-out", json.dumps({"0": "normal", "1": "pneumonia"}))
    assert studies == [("CR", "CHEST", None, None)]
    assert persons == (report.ingested, 0, 0)
    assert images == [(28, 28, 1, 1, "uint8", 784)]
    # Each image is a patient whose pseudonym is the keyed hash of file:split:index.
    with np.load(pneumonia_npz) as d:
        labels = {s: d[f"{s}_labels"] for s in ("train", "val", "test")}
        images_by_split = {s: d[f"{s}_images"] for s in labels}
    share = partition_indices(labels, (1, 2), "iid", seed=5)
    idx = int(share["val"][0])
    pseudonym = node.pseudonymise(local_id("pneumoniamnist", "val", idx))
    X, y, ps = load_images(node.db, "pneumonia", "val", pseudonyms=[pseudonym])
    assert ps == [pseudonym] and y.tolist() == [int(labels["val"][idx, 0])]
    assert np.array_equal(X[0, :, :, 0], images_by_split["val"][idx])
    X, y, ps = load_images(node.db, "pneumonia", "val")
    assert len(ps) == len(share["val"]) == len(set(ps)) and X.shape[1:] == (28, 28, 1)
    assert load_images(node.db, "pneumonia", "val", pseudonyms=[])[0].shape[0] == 0


def test_rerun_adds_nothing_and_other_share_adds_the_rest(node, pneumonia_npz):
    first = ingest_medmnist(node, pneumonia_npz, dataset_id="p", partition=(1, 2))
    before = table_counts(node)
    second = ingest_medmnist(node, pneumonia_npz, dataset_id="p", partition=(1, 2))
    after = table_counts(node)
    assert second.ingested == 0 and second.already_present == first.ingested
    assert {t: after[t] for t in ("person", "image", "imaging_study")} == {
        t: before[t] for t in ("person", "image", "imaging_study")}
    third = ingest_medmnist(node, pneumonia_npz, dataset_id="p", partition=(2, 2))
    assert first.ingested + third.ingested == 4708 + 524 + 624


def test_failure_at_the_end_of_the_batch_rolls_everything_back(node, pneumonia_npz):
    ingest_medmnist(node, pneumonia_npz, dataset_id="other", partition=(1, 4))
    before = table_counts(node)
    audit_before = node.audit.verify()
    with np.load(pneumonia_npz) as d:
        labels = {s: d[f"{s}_labels"] for s in ("train", "val", "test")}
    share = partition_indices(labels, (2, 3), "iid", seed=0)
    last = local_id("pneumoniamnist", "test", int(share["test"][-1]))
    # An invalid row at the end of the batch: its image ref is already taken.
    ref = "im_" + image_hexes(node, "new", [last])[0]
    with node.db.transaction() as cur:
        cur.execute("INSERT INTO image (image_ref, height, width, channels, dtype, pixels)"
                    " VALUES (?, 1, 1, 1, 'uint8', '\\x00'::BLOB)", [ref])
    before["image"] += 1
    with pytest.raises(duckdb.ConstraintException):
        ingest_medmnist(node, pneumonia_npz, dataset_id="new", partition=(2, 3))
    assert table_counts(node) == before  # no dataset row, persons, studies, batch or audit
    assert node.audit.verify() == audit_before


def test_dataset_kind_and_label_names_are_checked(node, pneumonia_npz, tmp_path):
    ingest_medmnist(node, pneumonia_npz, dataset_id="p", partition=(1, 5))
    from federation.node.ingest import IngestError

    with pytest.raises(IngestError, match="names label 1 'pneumonia', not 'sick'"):
        ingest_medmnist(node, pneumonia_npz, dataset_id="p", partition=(2, 5),
                        label_names={"1": "sick"})
    odd = tmp_path / "odd.npz"
    np.savez(odd, train_images=np.zeros((3, 4, 4), np.float32), train_labels=np.zeros((3, 1)))
    with pytest.raises(IngestError, match="must be uint8"):
        ingest_medmnist(node, odd, dataset_id="q")
    empty = tmp_path / "empty.npz"
    np.savez(empty, something=np.zeros(3))
    with pytest.raises(IngestError, match="no MedMNIST arrays"):
        ingest_medmnist(node, empty, dataset_id="q")


class Steps:
    """A progress hook that records each step."""

    def start(self, total: int | None, description: str) -> None:
        self.total, self.steps = total, []

    def advance(self, n: int = 1) -> None:
        self.steps.append(n)


def test_progress_moves_per_batch_and_batches_store_the_same_rows(node, pneumonia_npz,
                                                                  monkeypatch):
    whole = Steps()
    ingest_medmnist(node, pneumonia_npz, dataset_id="one", partition=(1, 3), progress=whole)
    monkeypatch.setattr("federation.node.ingest.medmnist.BATCH", 500)
    steps = Steps()
    report = ingest_medmnist(node, pneumonia_npz, dataset_id="many", partition=(1, 3),
                             progress=steps)
    assert whole.steps == [whole.total] == [report.ingested]
    assert steps.steps == [500] * (report.ingested // 500) + [report.ingested % 500]
    rerun = Steps()
    ingest_medmnist(node, pneumonia_npz, dataset_id="many", partition=(1, 3), progress=rerun)
    assert rerun.steps == [rerun.total]
    with node.db.reader() as cur:
        rows = [cur.execute(
            "SELECT s.pseudonym, s.label, s.split, s.modality, i.height, i.frames, md5(i.pixels)"
            " FROM imaging_study s JOIN image i USING (image_ref) WHERE s.dataset_id = ?"
            " ORDER BY s.pseudonym", [ds]).fetchall() for ds in ("one", "many")]
    assert rows[0] == rows[1] and len(rows[0]) == report.ingested


@pytest.mark.unit
def test_batch_pseudonyms_equal_single_ones():
    from federation.node.home import pseudonym, pseudonyms

    ids = ["a", "pneumoniamnist:train:0", "ü-ñ", ""]
    for key in (b"k" * 32, b"x" * 64, b"long" * 40):
        assert pseudonyms(key, ids) == [pseudonym(key, i) for i in ids]
