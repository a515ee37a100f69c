"""MedMNIST partitions: n nodes taking i/n hold the file's images exactly once."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from federation.node.data import load_images
from federation.node.ingest import ingest_medmnist
from federation.node.partition import (
    SPLITS,
    PartitionError,
    Scheme,
    assign_partitions,
    parse_partition,
    parse_scheme,
    partition_indices,
)


def file_labels(npz_path) -> dict[str, np.ndarray]:
    with np.load(npz_path) as d:
        return {s: d[f"{s}_labels"] for s in SPLITS}


def file_multiset(npz_path) -> Counter:
    """(split, label, pixel bytes) of every image of the file, with multiplicity."""
    out: Counter = Counter()
    with np.load(npz_path) as d:
        for split in SPLITS:
            for img, lab in zip(d[f"{split}_images"], d[f"{split}_labels"][:, 0], strict=True):
                out[(split, int(lab), img.tobytes())] += 1
    return out


def node_multiset(home, dataset_id: str) -> Counter:
    out: Counter = Counter()
    for split in SPLITS:
        X, y, _ = load_images(home.db, dataset_id, split)
        for img, lab in zip(X, y, strict=True):
            out[(split, int(lab), img[..., 0].tobytes())] += 1
    return out


@pytest.mark.integration
@pytest.mark.parametrize("scheme", [s.value for s in Scheme])
def test_three_nodes_hold_the_file_exactly_once(scheme, make_node, pneumonia_npz):
    expected = file_multiset(pneumonia_npz)
    assert sum(expected.values()) == 4708 + 524 + 624
    total: Counter = Counter()
    sizes = []
    for i in (1, 2, 3):
        home = make_node(f"hospital-{i}")
        report = ingest_medmnist(home, pneumonia_npz, dataset_id="pneumonia",
                                 partition=(i, 3), scheme=scheme, seed=42)
        held = node_multiset(home, "pneumonia")
        assert sum(held.values()) == report.ingested > 0
        sizes.append(report.ingested)
        total += held
    # Equal multisets: every image is held once (no loss), none twice (no overlap).
    assert total == expected
    if scheme == "quantity-skew":
        assert max(sizes) > 2 * min(sizes)
    if scheme == "iid":
        assert max(sizes) - min(sizes) <= 3


@pytest.mark.integration
def test_same_seed_same_share_other_seed_other_share(make_node, pneumonia_npz):
    a, b, c = (make_node(h) for h in ("a", "b", "c"))
    ingest_medmnist(a, pneumonia_npz, dataset_id="p", partition=(2, 3), scheme="label-skew", seed=7)
    ingest_medmnist(b, pneumonia_npz, dataset_id="p", partition=(2, 3), scheme="label-skew", seed=7)
    ingest_medmnist(c, pneumonia_npz, dataset_id="p", partition=(2, 3), scheme="label-skew", seed=8)
    assert node_multiset(a, "p") == node_multiset(b, "p")
    assert node_multiset(a, "p") != node_multiset(c, "p")


@pytest.mark.unit
@pytest.mark.parametrize("scheme", list(Scheme))
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_assignment_is_a_partition(scheme, n, pneumonia_npz):
    labels = file_labels(pneumonia_npz)
    a = assign_partitions(labels, n, scheme, seed=3)
    for split in SPLITS:
        assert a[split].shape == (len(labels[split]),)
        assert a[split].min() >= 0 and a[split].max() < n
    shares = [partition_indices(labels, (i, n), scheme, seed=3) for i in range(1, n + 1)]
    for split in SPLITS:
        joined = np.concatenate([s[split] for s in shares])
        assert sorted(joined.tolist()) == list(range(len(labels[split])))
    again = assign_partitions(labels, n, scheme, seed=3)
    assert all(np.array_equal(a[s], again[s]) for s in SPLITS)


@pytest.mark.unit
def test_label_skew_skews_labels_and_alpha_controls_it(pneumonia_npz):
    labels = file_labels(pneumonia_npz)
    y = labels["train"][:, 0]

    def spread(alpha: float) -> float:
        a = assign_partitions(labels, 3, Scheme.LABEL_SKEW, seed=1, alpha=alpha)["train"]
        share = [y[a == j].mean() if (a == j).any() else 0.5 for j in range(3)]
        return max(share) - min(share)

    iid = assign_partitions(labels, 3, Scheme.IID, seed=1)["train"]
    iid_share = [y[iid == j].mean() for j in range(3)]
    assert max(iid_share) - min(iid_share) < 0.05
    assert spread(0.1) > 0.3
    assert spread(100.0) < spread(0.1)


@pytest.mark.unit
def test_quantity_skew_gives_every_node_something_when_it_can():
    labels = {"train": np.zeros(30), "val": np.zeros(3), "test": np.zeros(2)}
    for seed in range(20):
        a = assign_partitions(labels, 3, Scheme.QUANTITY_SKEW, seed=seed, alpha=0.1)
        assert set(a["train"].tolist()) == {0, 1, 2}
        assert set(a["val"].tolist()) == {0, 1, 2}
        assert len(a["test"]) == 2  # fewer items than nodes: still a partition


@pytest.mark.unit
@pytest.mark.parametrize("spec", ["4/3", "0/3", "3", "a/b", "1/0", "-1/3", ""])
def test_bad_partition_specs(spec):
    with pytest.raises(PartitionError):
        parse_partition(spec)


@pytest.mark.unit
def test_partition_parsing_and_schemes():
    assert parse_partition("2/3") == (2, 3)
    assert parse_partition(" 1 / 1 ") == (1, 1)
    with pytest.raises(PartitionError, match="unknown split scheme"):
        parse_scheme("random")
    with pytest.raises(PartitionError, match="alpha"):
        assign_partitions({"train": np.zeros(4)}, 2, Scheme.LABEL_SKEW, alpha=0)
