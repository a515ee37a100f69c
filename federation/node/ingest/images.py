"""Folders of PNG / JPEG images with a labels CSV (e.g. exported screening images).

The CSV is the list of what to ingest: columns `file` (path relative to the
folder) and `label`, optionally `patient_id` (else each file is its own subject),
`split`, `modality`, `body_site`, `study_date`, `sex`, `birth_year`. Image files in
the folder that the CSV does not list are reported and skipped. A row without a split
gets its person's default split (`common.default_split`), as DICOM instances do.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from federation.node.home import NodeHome
from federation.node.ingest.common import (
    IngestError,
    IngestReport,
    NullProgress,
    Progress,
    StudyRows,
    array_record,
    check_consent_regime,
    check_dataset_id,
    ensure_dataset,
    existing_study_ids,
    finish_batch,
    label_codes,
    normalise_sex,
    parse_date,
    read_labels_csv,
)
from federation.node.pseudonyms import NodePseudonymiser

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
CHUNK = 256


def decode_image(path: Path) -> tuple[np.ndarray, int]:
    """Pixels as uint8 (or uint16 for 16-bit greyscale) H×W[×C], and the channel count."""
    with Image.open(path) as img:
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L"):
            arr = np.asarray(img, dtype=np.uint16)
        elif img.mode in ("L", "RGB"):
            arr = np.asarray(img)
        elif img.mode in ("1", "LA", "I", "F"):
            arr = np.asarray(img.convert("L"))
        else:  # P, RGBA, CMYK, YCbCr ...
            arr = np.asarray(img.convert("RGB"))
    channels = arr.shape[2] if arr.ndim == 3 else 1
    return arr, channels


def ingest_images(
    home: NodeHome,
    directory: str | Path,
    *,
    labels_csv: str | Path,
    dataset_id: str,
    title: str | None = None,
    consent_regime: str | None = None,
    modality: str | None = None,
    body_site: str | None = None,
    id_system: str | None = None,
    progress: Progress | None = None,
) -> IngestReport:
    """Ingest the images a labels CSV lists; one study per file. The CSV's `patient_id`
    column names the person (of system `id_system` on a federated node)."""
    root = Path(directory)
    progress = progress or NullProgress()
    pseudonymiser = NodePseudonymiser(home, id_system)
    check_dataset_id(dataset_id)
    check_consent_regime(consent_regime)
    if not root.is_dir():
        raise IngestError(f"directory {root} does not exist")
    frame, _ = read_labels_csv(Path(labels_csv), ("file",))
    codes, label_names = label_codes(frame["label"])
    listed = {f.strip() for f in frame["file"]}
    unlisted = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        and str(p.relative_to(root)) not in listed
    )
    progress.start(len(frame), f"images {root.name}")
    report = IngestReport(dataset_id=dataset_id, source_kind="images",
                          pseudonyms=pseudonymiser.mode)
    for name in unlisted:
        report.skip(name, "not in labels CSV")
    study_key = home.derive_key("study")

    def col(name: str, i: int) -> str | None:
        if name not in frame.columns:
            return None
        value = str(frame[name].iloc[i]).strip()
        return value or None

    with home.db.transaction() as cur:
        report.dataset_created = ensure_dataset(
            cur,
            dataset_id=dataset_id,
            kind="imaging",
            title=title or f"images {root.name}",
            source=f"image folder {root}",
            consent_regime=consent_regime,
            label_names=label_names,
        )
        stored = existing_study_ids(cur, dataset_id)
        rows = StudyRows()
        for i, rel in enumerate(frame["file"]):
            progress.advance()
            name = rel.strip()
            path = root / name
            hexid = hashlib.blake2b(
                f"{dataset_id}:{name}".encode(), key=study_key, digest_size=16
            ).hexdigest()
            if "st_" + hexid in stored:
                report.already_present += 1
                continue
            if not path.is_file():
                report.skip(name, "listed in labels CSV but missing")
                continue
            try:
                arr, channels = decode_image(path)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                report.skip(name, "unreadable image", f"{type(exc).__name__}: {exc}")
                continue
            birth = col("birth_year", i)
            row_split = col("split", i)
            patient = col("patient_id", i)
            why = (pseudonymiser.problem(patient) if patient else
                   "no patient_id in the labels CSV" if pseudonymiser.federated else None)
            if why is not None:
                report.skip(name, "no usable patient_id", why)
                continue
            rows.add(
                person=patient or f"image-file:{name}",
                sex=normalise_sex(col("sex", i)),
                birth_year=int(birth) if birth and birth.isdigit() else None,
                image_ref="im_" + hexid,
                study_id="st_" + hexid,
                modality=(col("modality", i) or modality or "OT").upper(),
                body_site=(b.upper() if (b := col("body_site", i) or body_site) else None),
                study_date=parse_date(col("study_date", i)),
                manufacturer=None,
                label=codes[i],
                split=row_split,
                **array_record(arr, channels=channels),
            )
            report.ingested += 1
            if len(rows) >= CHUNK:
                rows.flush(cur, dataset_id, pseudonymiser)
        rows.flush(cur, dataset_id, pseudonymiser)
        finish_batch(
            home, cur, report, source=str(root),
            params={"directory": str(root), "labels_csv": str(labels_csv), "listed": len(frame)},
        )
    return report
