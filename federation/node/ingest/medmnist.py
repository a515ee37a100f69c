"""MedMNIST `.npz` files: a public dataset dealt out across simulated hospitals.

Each image is treated as one patient (MedMNIST has no patient ids): the local id
`<file stem>:<split>:<index>` is pseudonymised, so two datasets made from the same
file share persons. On a federated node it is an identifier of the test-person
system (`urn:tre:test-person|pneumoniamnist-train-17`), so every node and a steward
agree on who is who.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from federation.node.home import NodeHome, keyed_ids
from federation.node.ingest.common import (
    SPLITS,
    IngestError,
    IngestReport,
    NullProgress,
    Progress,
    check_consent_regime,
    check_dataset_id,
    ensure_dataset,
    finish_batch,
    insert_studies,
    release,
)
from federation.node.partition import PartitionError, Scheme, parse_scheme, partition_indices
from federation.node.pseudonyms import NodePseudonymiser
from pseudonymisation.identifiers import TEST_PERSON

# Label names of MedMNIST v2 releases (from the dataset's INFO, for the common ones).
KNOWN_LABEL_NAMES: dict[str, dict[str, str]] = {
    "pneumoniamnist": {"0": "normal", "1": "pneumonia"},
    "breastmnist": {"0": "malignant", "1": "normal, benign"},
}
KNOWN_MODALITY: dict[str, tuple[str, str]] = {
    "pneumoniamnist": ("CR", "CHEST"),
    "chestmnist": ("CR", "CHEST"),
    "breastmnist": ("US", "BREAST"),
}
#: Images per INSERT and per progress step (one transaction spans them all): large
#: enough that statement overhead stays small, small enough that the bar moves on
#: a whole ChestMNIST (112,120 images).
BATCH = 8192


def local_id(stem: str, split: str, index: int) -> str:
    """The local patient id of image `index` of `split` in file `<stem>.npz`."""
    return f"{stem.lower()}:{split}:{index}"


def person_id(local: str) -> str:
    """The test-person identifier value of a local id (`pneumoniamnist-train-17`), as a
    steward names that person to the pseudonymisation service."""
    return local.replace(":", "-")


def image_hexes(home: NodeHome, dataset_id: str, local_ids: Iterable[str]) -> list[str]:
    """Keyed hashes behind study ids (`st_<hex>`) and image refs (`im_<hex>`)."""
    ids = keyed_ids(home.derive_key("study"), "x", (f"{dataset_id}:{lid}" for lid in local_ids))
    return [i[2:] for i in ids]


def _load(path: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    """The file's (images, labels) per split and its SHA-256 (read once, for the audit)."""
    if not path.is_file():
        raise IngestError(f"file {path} does not exist")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    try:
        with np.load(io.BytesIO(raw)) as npz:
            keys = set(npz.files)
            data = {
                split: (npz[f"{split}_images"], npz[f"{split}_labels"])
                for split in SPLITS
                if f"{split}_images" in keys and f"{split}_labels" in keys
            }
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise IngestError(f"{path.name} is not a readable .npz file: {exc}") from exc
    if not data:
        raise IngestError(
            f"{path.name} has no MedMNIST arrays (expected train_images/train_labels, ...)"
        )
    for split, (images, labels) in data.items():
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise IngestError(
                f"{path.name}: {split}_images must be uint8 N×H×W[×C], "
                f"got {images.dtype} {images.shape}"
            )
        if len(labels) != len(images):
            raise IngestError(
                f"{path.name}: {split} has {len(images)} images but {len(labels)} labels"
            )
    return data, digest


def ingest_medmnist(
    home: NodeHome,
    path: str | Path,
    *,
    dataset_id: str,
    partition: tuple[int, int] = (1, 1),
    scheme: Scheme | str = Scheme.IID,
    seed: int = 0,
    alpha: float = 0.5,
    title: str | None = None,
    consent_regime: str | None = None,
    label_names: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> IngestReport:
    """Ingest this node's share (`partition` i/n) of every split of a MedMNIST file."""
    path = Path(path)
    progress = progress or NullProgress()
    pseudonymiser = NodePseudonymiser(home, TEST_PERSON)
    check_dataset_id(dataset_id)
    check_consent_regime(consent_regime)
    scheme = parse_scheme(scheme) if isinstance(scheme, str) else scheme
    i, n = partition
    if not 1 <= i <= n:
        raise PartitionError(f"--partition {i}/{n}: i must be between 1 and n")
    data, digest = _load(path)
    stem = path.stem.lower()
    names = label_names or KNOWN_LABEL_NAMES.get(stem, {})
    modality, body_site = KNOWN_MODALITY.get(stem, ("CR", "CHEST"))
    shares = partition_indices(
        {s: lab for s, (_, lab) in data.items()}, (i, n), scheme, seed, alpha
    )
    total = sum(len(ix) for ix in shares.values())
    progress.start(total, f"{path.name} {i}/{n}")

    local_ids: list[str] = []
    splits: list[str] = []
    image_parts: list[np.ndarray] = []
    label_parts: list[np.ndarray] = []
    shape: tuple[int, ...] | None = None
    for split, idx in shares.items():
        images, labels = data[split]
        if shape is None:
            shape = images.shape[1:]
        elif images.shape[1:] != shape:
            raise IngestError(f"{path.name}: image shapes differ between splits")
        local_ids.extend(local_id(stem, split, j) for j in idx.tolist())
        splits.extend([split] * len(idx))
        image_parts.append(images[idx])
        label_parts.append(np.asarray(labels).reshape(len(labels), -1)[idx, 0].astype(np.int32))
    assert shape is not None
    height, width = int(shape[0]), int(shape[1])
    channels = int(shape[2]) if len(shape) == 3 else 1
    size = height * width * channels
    pixels = np.ascontiguousarray(np.concatenate(image_parts)).reshape(-1)
    labels_all = np.concatenate(label_parts)

    pseudonyms = pseudonymiser.many(
        [person_id(x) for x in local_ids] if pseudonymiser.federated else local_ids)
    hexes = image_hexes(home, dataset_id, local_ids)
    study_ids = ["st_" + h for h in hexes]
    image_refs = ["im_" + h for h in hexes]
    count = len(local_ids)
    offsets = np.arange(0, (count + 1) * size, size, dtype=np.int64)
    blobs = pa.Array.from_buffers(
        pa.large_binary(), count, [None, pa.py_buffer(offsets), pa.py_buffer(pixels)]
    )
    study_col = pa.array(study_ids, pa.string())
    persons = pa.table({
        "pseudonym": pa.array(pseudonyms, pa.string()),
        "sex": pa.nulls(count, pa.string()),
        "birth_year": pa.nulls(count, pa.int32()),
    })
    images_t = pa.table({
        "image_ref": pa.array(image_refs, pa.string()),
        "height": pa.array(np.full(count, height, np.int32)),
        "width": pa.array(np.full(count, width, np.int32)),
        "channels": pa.array(np.full(count, channels, np.int32)),
        "dtype": pa.array(["uint8"] * count, pa.string()),
        "pixels": blobs,
        "frames": pa.array(np.ones(count, np.int32)),
    })
    studies = pa.table({
        "study_id": study_col,
        "pseudonym": persons.column("pseudonym"),
        "modality": pa.array([modality] * count, pa.string()),
        "body_site": pa.array([body_site] * count, pa.string()),
        "study_date": pa.nulls(count, pa.date32()),
        "manufacturer": pa.nulls(count, pa.string()),
        "label": pa.array(labels_all),
        "split": pa.array(splits, pa.string()),
        "image_ref": images_t.column("image_ref"),
    })

    report = IngestReport(dataset_id=dataset_id, source_kind="medmnist",
                          pseudonyms=pseudonymiser.mode)
    params: dict[str, Any] = {
        "file": path.name,
        "sha256": digest,
        "partition": f"{i}/{n}",
        "split_scheme": scheme.value,
        "seed": seed,
        "alpha": alpha,
    }
    with home.db.transaction() as cur:
        report.dataset_created = ensure_dataset(
            cur,
            dataset_id=dataset_id,
            kind="imaging",
            title=title or f"{path.stem} (partition {i}/{n}, {scheme.value})",
            source=f"MedMNIST file {path.name}, partition {i}/{n} {scheme.value} seed {seed}",
            consent_regime=consent_regime,
            label_names=names,
        )
        # Study ids are keyed on the dataset id (which has no ':'), so a dataset created
        # just now holds none of them: only a re-run needs to look for stored ones.
        present = [] if report.dataset_created else _stored(cur, study_col)
        if present:
            keep = pc.invert(pc.is_in(study_col, value_set=pa.array(present, pa.string())))
            persons, images_t, studies = (
                persons.filter(keep), images_t.filter(keep), studies.filter(keep)
            )
            progress.advance(len(present))
        report.already_present = len(present)
        report.ingested = studies.num_rows
        for start in range(0, studies.num_rows, BATCH):
            insert_studies(cur, dataset_id, persons=persons.slice(start, BATCH),
                           images=images_t.slice(start, BATCH),
                           studies=studies.slice(start, BATCH))
            progress.advance(min(BATCH, studies.num_rows - start))
        finish_batch(home, cur, report, source=str(path), params=params)
    return report


def _stored(cur: duckdb.DuckDBPyConnection, study_ids: pa.Array) -> list[str]:
    """Which of these study ids the store already holds (one join, not one probe each)."""
    cur.register("_candidates", pa.table({"study_id": study_ids}))
    try:
        return [r[0] for r in cur.execute(
            "SELECT c.study_id FROM _candidates c JOIN imaging_study s USING (study_id)"
        ).fetchall()]
    finally:
        release(cur, "_candidates")

