"""Synthetic versions of a node's tables, kept at the node until they may leave.

`synthesize` reads one dataset from the common model (a clinical dataset as its
wide frame, an imaging dataset as its study metadata), runs the `synthetic`
pipeline and stores the outcome in the node home:

    synthetic/<dataset>/latest.json              the newest run: passed or not
    synthetic/<dataset>/runs/<run>/report.json   both reports and the gate (always)
    synthetic/<dataset>/runs/<run>/summary.txt   what the CLI printed (always)
    synthetic/<dataset>/runs/<run>/release/      table (CSV, Parquet), report, plots,
                                                 manifest.json with their SHA-256;
                                                 only when the gate passed

A run that failed the gate has no `release/` folder at all, so nothing about it
can be published by mistake (DESIGN §2.1). `releasable` is the only way the
publisher gets files: it re-reads the manifest, re-checks every hash and the gate
verdict written next to them, and refuses anything else. Pseudonyms, study ids and
image references never reach the synthesizer: they are not even selected.

Records are read only inside the node's gate, with the operator's credential: consent
for scientific research first, the read audited before the synthesizer sees it. Each
run records the digest of the consented cohort it modelled (`latest.json`, the
manifest, the audit), so `synthesize_if_cohort_changed` can re-run exactly when a
consent withdrawal (or a new consent, or new data) changed who may be modelled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from federation.node.authorisation import OperatorUse
from federation.node.consent import consent_filter_for
from federation.node.data import DataError, clinical_frame
from federation.node.errors import SynthesisError
from federation.node.gate import Action, ConsentedCohort, Gate
from federation.node.home import NodeHome
from federation.node.store import dataset_pseudonyms
from tre.core.audit import AuditAction
from tre.core.schemas import Purpose

if TYPE_CHECKING:  # `synthetic` pulls in SDV: imported only when a synthesis runs
    from synthetic import GateThresholds, ProgressCallback, Synthesizer, SyntheticResult
    from synthetic.synthesizers import SampleFunction

SYNTHETIC_DIR = "synthetic"
LATEST_FILE = "latest.json"
MANIFEST_FILE = "manifest.json"
RELEASE_DIR = "release"
#: The imaging metadata that is modelled: never pseudonym, study_id or image_ref.
IMAGING_COLUMNS = ("modality", "body_site", "study_date", "manufacturer", "label", "split",
                   "sex", "birth_year")
_DATASET_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class SynthesisOutcome:
    """One stored synthesis run: where it is, whether it passed, what may leave."""

    dataset_id: str
    run_id: str
    result: SyntheticResult
    run_dir: Path
    release_dir: Path | None
    files: dict[str, str] = field(default_factory=dict)  # release file name -> sha256

    @property
    def passed(self) -> bool:
        return self.result.gate.passed


@dataclass
class Releasable:
    """The files of a passed synthesis, hashes re-checked, ready for the portal."""

    dataset_id: str
    run_id: str
    table: bytes  # Parquet
    report: bytes  # report.json (both reports, the gate, the column plan)
    plots: dict[str, bytes]  # "marginal_x.png" -> PNG
    files: dict[str, str]  # every release file -> sha256


def dataset_kind(home: NodeHome, dataset_id: str) -> str:
    """'clinical' or 'imaging'; DataError naming the dataset when it does not exist."""
    with home.db.reader() as cur:
        rows = cur.execute("SELECT kind FROM dataset WHERE dataset_id = ?",
                           [dataset_id]).fetchall()
    if not rows:
        raise DataError(f"no dataset {dataset_id!r} at this node (see `tre node status`)")
    return rows[0][0]


def imaging_metadata_frame(home: NodeHome, dataset_id: str,
                           allowed: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per study: acquisition metadata, label (by name when declared) and the
    subject's sex and birth year. Identifiers are not selected, so they cannot leak.
    `allowed` restricts to the subjects the consent filter let through."""
    sql = ("SELECT s.modality, s.body_site, s.study_date, s.manufacturer, s.label, s.split,"
           " p.sex, p.birth_year FROM imaging_study s LEFT JOIN person p USING (pseudonym)"
           " WHERE s.dataset_id = ?")
    params: list[Any] = [dataset_id]
    if allowed is not None:
        sql += " AND s.pseudonym IN (SELECT unnest(?::VARCHAR[]))"
        params.append(list(allowed))
    with home.db.reader() as cur:
        names_json = cur.execute("SELECT label_names FROM dataset WHERE dataset_id = ?",
                                 [dataset_id]).fetchall()[0][0]
        frame = cur.execute(sql + " ORDER BY s.study_id", params).df()
    names = json.loads(names_json or "{}")
    if names:
        frame["label"] = frame["label"].map(
            lambda v: None if pd.isna(v) else names.get(str(int(v)), str(int(v))))
    return frame[list(IMAGING_COLUMNS)]


def source_frame(home: NodeHome, dataset_id: str,
                 allowed: Sequence[str] | None = None) -> pd.DataFrame:
    """The table to synthesise from: the clinical variables, or the imaging metadata,
    of the subjects in `allowed` (None: every subject)."""
    if not _DATASET_ID_RE.match(dataset_id or ""):
        raise DataError(f"dataset id {dataset_id!r} is invalid: use 1-64 letters, digits, "
                        "'.', '_' or '-'")
    if dataset_kind(home, dataset_id) == "clinical":
        frame = clinical_frame(home.db, dataset_id)
        if allowed is not None:
            frame = frame[frame["pseudonym"].isin(set(allowed))]
        frame = frame.drop(columns="pseudonym")
    else:
        frame = imaging_metadata_frame(home, dataset_id, allowed)
    if frame.empty or len(frame.columns) == 0:
        raise SynthesisError(f"dataset {dataset_id} holds no rows to synthesise from")
    # Rows in content order, not pseudonym order: pseudonyms depend on this node's key, so
    # the hold-out split (and with it the gate's verdict) would differ between two nodes
    # holding the same data. This way the data and the seed alone fix the result.
    order = np.argsort(pd.util.hash_pandas_object(frame, index=False).to_numpy(),
                       kind="stable")
    return frame.iloc[order].reset_index(drop=True)


def synthetic_dir(home: NodeHome, dataset_id: str) -> Path:
    return home.path / SYNTHETIC_DIR / dataset_id


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    os.replace(tmp, path)


def cohort_digest(pseudonyms: Sequence[str]) -> str:
    """SHA-256 of the sorted distinct pseudonyms a synthesis modelled: equal digests mean
    the same consented cohort, so a withdrawal (or a new consent) shows as a change
    without the node keeping the list itself."""
    return hashlib.sha256("\n".join(sorted(set(pseudonyms))).encode()).hexdigest()


def _check_options(home: NodeHome, dataset_id: str, *,
                   synthesizer: str | Synthesizer | SampleFunction, rows: int | None) -> None:
    """A bad name, row count or dataset fails before any pull or read."""
    from synthetic.names import SYNTHESIZERS

    if isinstance(synthesizer, str) and synthesizer not in SYNTHESIZERS:
        raise SynthesisError(
            f"unknown synthesizer {synthesizer!r}: choose one of {', '.join(SYNTHESIZERS)}")
    if rows is not None and rows < 1:
        raise SynthesisError(f"--rows must be at least 1, not {rows}")
    if not _DATASET_ID_RE.match(dataset_id or ""):
        raise DataError(f"dataset id {dataset_id!r} is invalid: use 1-64 letters, digits, "
                        "'.', '_' or '-'")
    dataset_kind(home, dataset_id)


@contextmanager
def _gate(home: NodeHome, dataset_id: str, consent_filter: str) -> Iterator[ConsentedCohort]:
    """The node's gate for the operator's synthesis of one dataset: the subjects whose
    consent covers scientific research; the gate audits the read or the refusal."""
    action = Action("synthesis", "all",
                    lambda home, grant: {dataset_id: dataset_pseudonyms(home, dataset_id)})
    gate = Gate(home, consent_filter_for(home, consent_filter))
    with gate.open(action, Purpose.SCIENTIFIC_RESEARCH, dataset_id,
                   OperatorUse("synthesis")) as cohort:
        yield cohort


def _read(home: NodeHome, cohort: ConsentedCohort) -> pd.DataFrame:
    """The consented cohort's table, its read recorded for the gate's audit: the gate
    writes that row as the body ends, before the synthesizer sees a row, so a crash
    inside SDV leaves the read audited."""
    frame = source_frame(home, str(cohort.dataset), cohort.pseudonyms)
    cohort.read(len(frame), cohort_digest=cohort_digest(cohort.pseudonyms))
    return frame


def synthesize(
    home: NodeHome,
    dataset_id: str,
    *,
    synthesizer: str | Synthesizer | SampleFunction = "gaussian_copula",
    rows: int | None = None,
    target: str | None = None,
    seed: int = 0,
    epochs: int | None = None,
    thresholds: GateThresholds | None = None,
    progress: ProgressCallback | None = None,
    consent_filter: str = "snapshot",
) -> SynthesisOutcome:
    """Generate, report, gate and store one synthetic table; audit the run either way.

    A name is checked against the known synthesizers before any data is read; an
    object or function (the gate tests' copying "synthesizer") is passed through.
    Consent is honoured before any record is read: only subjects whose consent (or,
    under opt-out, absence of objection) covers scientific research are modelled,
    read inside the node's gate (`federation.node.gate`).
    """
    _check_options(home, dataset_id, synthesizer=synthesizer, rows=rows)
    with _gate(home, dataset_id, consent_filter) as cohort:
        frame = _read(home, cohort)
    return _synthesize_frame(home, dataset_id, frame, cohort.pseudonyms,
                             synthesizer=synthesizer, rows=rows, target=target, seed=seed,
                             epochs=epochs, thresholds=thresholds, progress=progress)


def synthesize_if_cohort_changed(
    home: NodeHome, dataset_id: str, *,
    synthesizer: str | Synthesizer | SampleFunction = "gaussian_copula",
    rows: int | None = None, consent_filter: str = "snapshot", **options: Any,
) -> SynthesisOutcome | None:
    """`synthesize` (same options) only when the consented cohort differs from the one
    the latest run modelled (a withdrawal, a new consent, new data); None when it does
    not. Compared with the latest run, passed or not: the same cohort with the same
    settings gives the same verdict, so running again would only repeat it.

    The comparison needs the consented subjects only (the gate's consent decision), not
    a record of theirs, so an unchanged cohort is audited as what it is,
    `synthetic.cohort_unchanged`, and not as a `data.read`: an auditor counting reads
    of a dataset should see the days its records were read, not every run of a daily
    timer. A changed cohort is read and audited as `synthesize` does.
    """
    _check_options(home, dataset_id, synthesizer=synthesizer, rows=rows)
    with _gate(home, dataset_id, consent_filter) as cohort:
        digest = cohort_digest(cohort.pseudonyms)
        previous = latest(home, dataset_id) or {}
        if previous.get("cohort_digest") == digest:
            cohort.read_nothing()
            home.audit.record(actor=home.actor, action=AuditAction.SYNTHETIC_COHORT_UNCHANGED,
                              object_type="dataset", object_id=dataset_id,
                              details={"run_id": previous.get("run_id"),
                                       "cohort_digest": digest,
                                       "cohort_size": len(set(cohort.pseudonyms))})
            return None
        frame = _read(home, cohort)
    return _synthesize_frame(home, dataset_id, frame, cohort.pseudonyms,
                             synthesizer=synthesizer, rows=rows, **options)


def _synthesize_frame(home: NodeHome, dataset_id: str, frame: pd.DataFrame,
                      cohort: list[str], *,
                      synthesizer: str | Synthesizer | SampleFunction = "gaussian_copula",
                      **options: Any) -> SynthesisOutcome:
    from synthetic import run_pipeline  # SDV: only once consent and credentials are settled

    try:
        result = run_pipeline(frame, synthesizer=synthesizer, **options)
    except ValueError as exc:
        raise SynthesisError(f"cannot synthesise {dataset_id}: {exc}") from exc
    return store_result(home, dataset_id, result, cohort=cohort)


def store_result(home: NodeHome, dataset_id: str, result: SyntheticResult, *,
                 cohort: Sequence[str]) -> SynthesisOutcome:
    """Write the reports (always) and the release files (only if the gate passed), audit,
    then point `latest.json` at the run, with the digest of the consented `cohort` it
    modelled. Files land under a hidden name and are renamed into place, so a crash
    never leaves a half-written release."""
    digest, size = cohort_digest(cohort), len(set(cohort))
    base = synthetic_dir(home, dataset_id)
    (base / "runs").mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    run_id = f"syn_{now:%Y%m%dT%H%M%S}_{secrets.token_hex(3)}"
    run_dir = base / "runs" / run_id
    partial = base / "runs" / f".{run_id}.partial"
    partial.mkdir()
    files: dict[str, str] = {}
    try:
        (partial / "report.json").write_text(result.to_json())
        (partial / "summary.txt").write_text(result.summary() + "\n")
        if result.gate.passed:  # release_files() itself refuses a failed gate
            for name, data in result.release_files(formats=("csv", "parquet")).items():
                path = partial / RELEASE_DIR / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                files[name] = _sha256(data)
            _write_json_atomic(partial / RELEASE_DIR / MANIFEST_FILE,
                               {"run_id": run_id, "dataset_id": dataset_id, "files": files,
                                "cohort_digest": digest, "cohort_size": size})
        os.replace(partial, run_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    f = result.fidelity
    home.audit.record(
        actor=home.actor, action=AuditAction.SYNTHETIC_GENERATE, object_type="dataset",
        object_id=dataset_id,
        details={
            "run_id": run_id,
            "passed": result.gate.passed,
            "failed_checks": [c.name for c in result.gate.failed],
            "checks": {c.name: c.value for c in result.gate.checks},
            "settings": {k: v for k, v in result.settings.items() if k != "limits"},
            "quality_score": f.quality_score,
            "excluded_columns": [e.as_dict() for e in result.excluded_columns],
            "release_files": files,
            "cohort_digest": digest,
            "cohort_size": size,
        },
    )
    _write_json_atomic(base / LATEST_FILE, {
        "run_id": run_id,
        "dataset_id": dataset_id,
        "created_at": now.isoformat(timespec="seconds"),
        "passed": result.gate.passed,
        "failed_checks": [c.name for c in result.gate.failed],
        "synthesizer": result.settings["synthesizer"],
        "rows": len(result.synthetic),
        "quality_score": f.quality_score,
        "cohort_digest": digest,
        "cohort_size": size,
        "release": f"runs/{run_id}/{RELEASE_DIR}" if result.gate.passed else None,
    })
    return SynthesisOutcome(dataset_id, run_id, result, run_dir,
                            run_dir / RELEASE_DIR if result.gate.passed else None, files)


def latest(home: NodeHome, dataset_id: str) -> dict[str, Any] | None:
    """The newest synthesis run of a dataset (its latest.json), or None if never run."""
    path = synthetic_dir(home, dataset_id) / LATEST_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def releasable(home: NodeHome, dataset_id: str) -> Releasable:
    """The release files of the dataset's latest run, or SynthesisError saying why not.

    Checked here again, not trusted from the folder layout: the latest run passed,
    its report's gate says every check passed, and every file matches its hash.
    """
    info = latest(home, dataset_id)
    if info is None:
        raise SynthesisError(f"dataset {dataset_id} has no synthetic version: run "
                             f"`tre node synthesize {dataset_id}`")
    if not info.get("passed") or not info.get("release"):
        raise SynthesisError(
            f"the latest synthesis of {dataset_id} ({info.get('run_id')}) failed the release "
            f"gate ({', '.join(info.get('failed_checks') or []) or 'see its report'}): "
            "nothing of it leaves the node")
    folder = synthetic_dir(home, dataset_id) / info["release"]
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        blobs = {name: (folder / name).read_bytes() for name in manifest["files"]}
    except (OSError, ValueError, KeyError) as exc:
        raise SynthesisError(f"the release of {dataset_id} is incomplete: {exc}") from exc
    for name, digest in manifest["files"].items():
        if _sha256(blobs[name]) != digest:
            raise SynthesisError(f"{name} of {dataset_id}'s release changed after the gate "
                                 "checked it: refusing to publish; synthesise again")
    gate = json.loads(blobs["report.json"]).get("gate") or {}
    checks = gate.get("checks") or []
    if not gate.get("passed") or not checks or not all(c.get("passed") for c in checks):
        raise SynthesisError(f"the release report of {dataset_id} does not show a passed "
                             "gate: refusing to publish")
    if "synthetic.parquet" not in blobs:
        raise SynthesisError(f"the release of {dataset_id} has no Parquet table")
    plots = {name.removeprefix("plots/"): data for name, data in blobs.items()
             if name.startswith("plots/")}
    return Releasable(dataset_id, info["run_id"], blobs["synthetic.parquet"],
                      blobs["report.json"], plots, dict(manifest["files"]))


def publishable_datasets(home: NodeHome, dataset_ids: list[str]) -> list[str]:
    """Those of `dataset_ids` whose latest synthesis passed the gate."""
    out = []
    for dataset_id in dataset_ids:
        info = latest(home, dataset_id)
        if info and info.get("passed") and info.get("release"):
            out.append(dataset_id)
    return out
