"""DICOM folders: one `imaging_study` row per SOP instance, pixels decoded and stored.

Identity: `PatientID` is replaced by the keyed-hash pseudonym before anything is
written. The pseudonym is of the bare id, as in clinical tables and the consent
registry, so one patient's images, clinical rows and consent meet on one pseudonym
(an instance without a PatientID is its own subject, keyed by study or instance
UID); the study id is a keyed hash of the SOPInstanceUID, so re-running skips what
is stored and two copies of one instance in a folder (e.g. one image in several
transfer syntaxes) give one row: the lossless copy when there is one (files in a
lossless or uncompressed transfer syntax are read first). Nothing else from the header
is kept beyond the common-model fields (modality, body part, study date, manufacturer,
sex, birth year) and what is needed to read the pixels: photometric interpretation,
rescale slope / intercept, the first VOI window, the transfer syntax.

Pixel data is decoded by pydicom's handlers (pylibjpeg for JPEG, JPEG-LS,
JPEG 2000; RLE natively) and stored as raw values, bit for bit what pydicom's
`pixel_array` gives (YBR colour converted to RGB), little-endian. Rescale and window
are applied when training reads them (`federation.training.pixels`), never stored.

Instances without a split (from `--split` or the labels CSV) get their person's
default split (`common.default_split`), so an ingestion is trainable as it stands.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import pydicom
from pydicom import uid
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.multival import MultiValue

from federation.node.home import NodeHome, keyed_ids
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

CHUNK = 64  # instances per INSERT; the transaction spans the whole batch


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


LOSSLESS_SYNTAXES = frozenset({
    uid.JPEGLossless, uid.JPEGLosslessSV1, uid.JPEGLSLossless, uid.JPEG2000Lossless,
    uid.RLELossless, uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL,
})


def _lossy_rank(path: Path) -> int:
    """0 for a file in an uncompressed or lossless transfer syntax (or unreadable: the
    main pass reports it), 1 for a possibly lossy one. Reads the file meta only."""
    try:
        ts = read_file_meta_info(path).get("TransferSyntaxUID")
    except Exception:  # noqa: BLE001 - not DICOM or no meta: decided by the main pass
        return 0
    if ts is None or not ts.is_compressed or ts in LOSSLESS_SYNTAXES:
        return 0
    return 1


def _first_number(ds: pydicom.Dataset, keyword: str, group: str | None = None
                  ) -> float | None:
    """A numeric attribute's first value, looked up in the dataset and, for enhanced
    multi-frame objects, in the shared functional group `group`; None when absent or
    not a number."""
    value = ds.get(keyword)
    if value is None and group is not None:
        shared = ds.get("SharedFunctionalGroupsSequence")
        items = shared[0].get(group) if shared else None
        value = items[0].get(keyword) if items else None
    if isinstance(value, MultiValue):
        value = value[0] if len(value) else None
    try:
        return float(value) if value is not None and str(value).strip() != "" else None
    except (TypeError, ValueError):
        return None


def pixel_meta(ds: pydicom.Dataset) -> dict[str, Any]:
    """How to read the stored pixel values: the `image` columns of schema version 3.

    The photometric interpretation is of the stored values: pydicom converts YBR to RGB.
    """
    photometric = _text(ds, "PhotometricInterpretation")
    if photometric and photometric.upper().startswith("YBR"):
        photometric = "RGB"
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    return {
        "photometric": photometric.upper() if photometric else None,
        "rescale_slope": _first_number(ds, "RescaleSlope", "PixelValueTransformationSequence"),
        "rescale_intercept": _first_number(ds, "RescaleIntercept",
                                           "PixelValueTransformationSequence"),
        "window_center": _first_number(ds, "WindowCenter", "FrameVOILUTSequence"),
        "window_width": _first_number(ds, "WindowWidth", "FrameVOILUTSequence"),
        "transfer_syntax": str(ts) if ts else None,
    }


def _text(ds: pydicom.Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None


def _birth_year(ds: pydicom.Dataset) -> int | None:
    text = _text(ds, "PatientBirthDate") or ""
    return int(text[:4]) if len(text) >= 4 and text[:4].isdigit() and int(text[:4]) > 1800 else None


def _person(ds: pydicom.Dataset, fallback: str, pseudonymiser: NodePseudonymiser
            ) -> tuple[str, str | None]:
    """(local patient id, why it cannot be used or None). Offline, an instance without
    PatientID stands for a person of its own; a federation pseudonym needs the id."""
    pid = _text(ds, "PatientID")
    if pid:
        return pid, pseudonymiser.problem(pid)
    if pseudonymiser.federated:
        return "", "the instance has no PatientID"
    study = _text(ds, "StudyInstanceUID")
    return (f"dicom-study:{study}" if study else f"dicom-instance:{fallback}"), None


def instance_hex(home: NodeHome, dataset_id: str, identity: str) -> str:
    """The keyed hash behind an instance's ids: study `st_<hex>`, image `im_<hex>`.

    `identity` is the SOPInstanceUID (or `sha256:<file hash>` when it has none).
    """
    return keyed_ids(home.derive_key("study"), "x", [f"{dataset_id}:{identity}"])[0][2:]


def read_instance(path: Path) -> tuple[pydicom.Dataset | None, Any, str | None, str]:
    """(dataset, pixel array, skip reason, detail): decode one file, or say why not."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
    except InvalidDicomError as exc:
        return None, None, "not a DICOM file", str(exc)
    except Exception as exc:  # noqa: BLE001 - any parse failure means unusable
        return None, None, "unreadable DICOM", f"{type(exc).__name__}: {exc}"
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        return ds, None, "no pixel data", f"modality {_text(ds, 'Modality') or 'unknown'}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoders raise many kinds
        msg = f"{type(exc).__name__}: {exc}"
        reason = "truncated pixel data" if "less than expected" in str(exc) else (
            "undecodable pixel data")
        return ds, None, reason, msg
    return ds, arr, None, ""


def ingest_dicom(
    home: NodeHome,
    directory: str | Path,
    *,
    dataset_id: str,
    labels_csv: str | Path | None = None,
    title: str | None = None,
    consent_regime: str | None = None,
    split: str | None = None,
    id_system: str | None = None,
    progress: Progress | None = None,
) -> IngestReport:
    """Ingest every decodable DICOM instance under `directory` (recursively).

    Labels, if given, come from a CSV with `label` and either `file` (path relative
    to the directory) or `sop_instance_uid`, optionally `split`; text labels are
    coded 0..m-1 by name and the names kept on the dataset.
    """
    root = Path(directory)
    progress = progress or NullProgress()
    pseudonymiser = NodePseudonymiser(home, id_system)
    check_dataset_id(dataset_id)
    check_consent_regime(consent_regime)
    if not root.is_dir():
        raise IngestError(f"directory {root} does not exist")
    if split is not None and split not in ("train", "val", "test"):
        raise IngestError(f"split {split!r} is not one of train, val, test")
    labels_by: dict[str, tuple[int | None, str | None]] = {}
    label_key = None
    label_names: dict[str, str] = {}
    if labels_csv is not None:
        frame, label_key = read_labels_csv(Path(labels_csv), ("file", "sop_instance_uid"))
        codes, label_names = label_codes(frame["label"])
        splits = frame["split"].str.strip() if "split" in frame.columns else [None] * len(frame)
        labels_by = {
            k.strip(): (c, s or None)
            for k, c, s in zip(frame[label_key], codes, splits, strict=True)
        }
    # Lossless copies first, so that of two copies of one instance the lossless one stays.
    files = sorted(_files(root), key=lambda p: (_lossy_rank(p), p))
    progress.start(len(files), f"DICOM {root.name}")
    report = IngestReport(dataset_id=dataset_id, source_kind="dicom",
                          pseudonyms=pseudonymiser.mode)
    params = {"directory": str(root), "files": len(files), "labels_csv": str(labels_csv or ""),
              "split": split}
    with home.db.transaction() as cur:
        report.dataset_created = ensure_dataset(
            cur,
            dataset_id=dataset_id,
            kind="imaging",
            title=title or f"DICOM {root.name}",
            source=f"DICOM folder {root}",
            consent_regime=consent_regime,
            label_names=label_names,
        )
        stored = existing_study_ids(cur, dataset_id)
        seen: dict[str, str] = {}
        rows = StudyRows()
        for path in files:
            name = str(path.relative_to(root))
            progress.advance()
            ds, arr, reason, detail = read_instance(path)
            if reason is not None or ds is None:
                report.skip(name, reason or "unreadable DICOM", detail)
                continue
            sop_uid = _text(ds, "SOPInstanceUID")
            identity = sop_uid or "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
            person, why = _person(ds, identity, pseudonymiser)
            if why is not None:
                report.skip(name, "no usable PatientID", why)
                continue
            hexid = instance_hex(home, dataset_id, identity)
            study_id = "st_" + hexid
            if study_id in seen:
                report.skip(name, "duplicate instance", f"same SOPInstanceUID as {seen[study_id]}")
                continue
            seen[study_id] = name
            if study_id in stored:
                report.already_present += 1
                continue
            label, row_split = None, split
            if label_key is not None:
                keys = (name, path.name) if label_key == "file" else (sop_uid or "",)
                hit = next((labels_by[k] for k in keys if k in labels_by), None)
                if hit is not None:
                    label, csv_split = hit
                    row_split = csv_split or split
            try:
                frames = int(ds.get("NumberOfFrames") or 1)
                samples = int(ds.get("SamplesPerPixel") or 1)
                expected = (frames,) if frames > 1 else ()
                expected += (int(ds.Rows), int(ds.Columns)) + ((samples,) if samples > 1 else ())
                if tuple(arr.shape) != expected:
                    raise ValueError(f"pixel array shape {arr.shape} is not {expected}")
                record = array_record(arr, frames=frames, channels=samples)
            except Exception as exc:  # noqa: BLE001 - header and pixels disagree
                report.skip(name, "inconsistent pixel data", f"{type(exc).__name__}: {exc}")
                del seen[study_id]
                continue
            study_date = None
            for kw in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
                study_date = parse_date(_text(ds, kw))
                if study_date:
                    break
            modality = _text(ds, "Modality")
            body_site = _text(ds, "BodyPartExamined")
            rows.add(
                person=person,
                sex=normalise_sex(_text(ds, "PatientSex")),
                birth_year=_birth_year(ds),
                image_ref="im_" + hexid,
                study_id=study_id,
                modality=modality.upper() if modality else None,
                body_site=body_site.upper() if body_site else None,
                study_date=study_date,
                manufacturer=_text(ds, "Manufacturer"),
                label=label,
                split=row_split,
                **record,
                **pixel_meta(ds),
            )
            report.ingested += 1
            if len(rows) >= CHUNK:
                rows.flush(cur, dataset_id, pseudonymiser)
        rows.flush(cur, dataset_id, pseudonymiser)
        finish_batch(home, cur, report, source=str(root), params=params)
    return report
