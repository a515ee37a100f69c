"""Clinical tables (CSV or Parquet) into the long `clinical` table.

One row per subject; the id column (the hospital's patient id, as in DICOM
PatientID, so images and clinical rows of a patient share one pseudonym) is
pseudonymised and dropped, every other
column becomes a variable: numeric columns (and booleans, as 0/1) go to
`value_num`, others to `value_text`; empty cells are not stored. A variable's type
is fixed by its first ingestion (`clinical_variable`), so a later file cannot turn
a numeric variable into text.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from federation.node.home import NodeHome
from federation.node.ingest.common import (
    IngestError,
    IngestReport,
    NullProgress,
    Progress,
    check_consent_regime,
    check_dataset_id,
    ensure_dataset,
    finish_batch,
    normalise_sex,
    release,
    upsert_persons,
)
from federation.node.pseudonyms import NodePseudonymiser


def read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise IngestError(f"file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pandas / arrow raise many kinds
        raise IngestError(f"{path.name} is not a readable {suffix[1:]} table: {exc}") from exc
    raise IngestError(f"{path.name}: use a .csv or .parquet file")


def _kind(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return "numeric"
    return "text"


def ingest_table(
    home: NodeHome,
    path: str | Path,
    *,
    id_column: str,
    dataset_id: str,
    title: str | None = None,
    consent_regime: str | None = None,
    sex_column: str | None = None,
    birth_year_column: str | None = None,
    id_system: str | None = None,
    progress: Progress | None = None,
) -> IngestReport:
    """Ingest a table of clinical variables, one row per subject.

    `id_system` names the identifiers' system (e.g. the INS OID); a federated node needs
    it to derive the federation pseudonym (federation.node.pseudonyms)."""
    path = Path(path)
    pseudonymiser = NodePseudonymiser(home, id_system)
    progress = progress or NullProgress()
    check_dataset_id(dataset_id)
    check_consent_regime(consent_regime)
    frame = read_table(path)
    for option, column in (("--id-column", id_column), ("--sex-column", sex_column),
                           ("--birth-year-column", birth_year_column)):
        if column is not None and column not in frame.columns:
            raise IngestError(f"{option} {column!r} is not a column of {path.name}")
    report = IngestReport(dataset_id=dataset_id, source_kind="table", unit="subjects",
                          pseudonyms=pseudonymiser.mode)
    progress.start(len(frame), f"table {path.name}")

    ids = frame[id_column]
    keep = np.ones(len(frame), dtype=bool)
    blank = ids.isna() | (ids.astype(str).str.strip() == "")
    dupes = ids.astype(str).str.strip().duplicated(keep="first") & ~blank
    # Row numbers, never id values, name skipped rows (ids are patient identifiers).
    header_offset = 2 if path.suffix.lower() == ".csv" else 1
    for i in np.flatnonzero(blank.to_numpy()):
        report.skip(f"row {i + header_offset}", "no subject id")
    for i in np.flatnonzero(dupes.to_numpy()):
        report.skip(f"row {i + header_offset}", "duplicate subject id")
    keep &= ~(blank | dupes).to_numpy()
    for i in np.flatnonzero(keep) if pseudonymiser.federated else ():
        why = pseudonymiser.problem(str(ids.iloc[i]).strip())
        if why is not None:
            report.skip(f"row {i + header_offset}", "malformed subject id", why)
            keep[i] = False
    frame = frame[keep].reset_index(drop=True)

    local_ids = frame[id_column].astype(str).str.strip()
    pseudonyms = pseudonymiser.many(list(local_ids))
    sex = (frame[sex_column].map(normalise_sex) if sex_column
           else pd.Series([None] * len(frame), dtype=object))
    birth = (pd.to_numeric(frame[birth_year_column], errors="coerce") if birth_year_column
             else pd.Series([np.nan] * len(frame)))
    variables = [c for c in frame.columns if c not in {id_column, sex_column, birth_year_column}]
    if not variables:
        raise IngestError(f"{path.name} has no variables besides the id column")
    kinds = {str(v): _kind(frame[v]) for v in variables}

    longs = []
    for v in variables:
        series = frame[v]
        numeric = kinds[str(v)] == "numeric"
        values = series.astype(float) if numeric else series
        present = values.notna().to_numpy()
        if not numeric:
            present &= values.astype(str).str.strip().to_numpy() != ""
        longs.append(pd.DataFrame({
            "pseudonym": np.asarray(pseudonyms, dtype=object)[present],
            "variable": str(v),
            "value_num": values[present].to_numpy(dtype=float) if numeric else np.nan,
            "value_text": None if numeric else values[present].astype(str).to_numpy(),
        }))
    long = pd.concat(longs, ignore_index=True)
    long_t = pa.Table.from_pandas(long, preserve_index=False, schema=pa.schema([
        ("pseudonym", pa.string()), ("variable", pa.string()),
        ("value_num", pa.float64()), ("value_text", pa.string()),
    ]))
    persons = pa.table({
        "pseudonym": pa.array(pseudonyms, pa.string()),
        "sex": pa.array(sex.tolist(), pa.string()),
        "birth_year": pa.array(
            [int(b) if pd.notna(b) else None for b in birth], pa.int32()),
    })

    with home.db.transaction() as cur:
        report.dataset_created = ensure_dataset(
            cur,
            dataset_id=dataset_id,
            kind="clinical",
            title=title or f"clinical table {path.stem}",
            source=f"table {path.name}",
            consent_regime=consent_regime,
            label_names=None,
        )
        known = dict(cur.execute(
            "SELECT variable, kind FROM clinical_variable WHERE dataset_id = ?", [dataset_id]
        ).fetchall())
        for v, kind in kinds.items():
            if v in known and known[v] != kind:
                raise IngestError(f"variable {v!r} of {dataset_id} is {known[v]}, not {kind}")
        position = cur.execute(
            "SELECT coalesce(max(position), -1) FROM clinical_variable WHERE dataset_id = ?",
            [dataset_id],
        ).fetchall()[0][0]
        new_vars = [(v, k) for v, k in kinds.items() if v not in known]
        for offset, (v, kind) in enumerate(new_vars, start=1):
            cur.execute(
                "INSERT INTO clinical_variable (dataset_id, variable, kind, position)"
                " VALUES (?, ?, ?, ?)", [dataset_id, v, kind, position + offset])
        cur.register("_long", long_t)
        cur.register("_persons", persons)
        try:
            cur.execute(
                "CREATE TEMP TABLE _new AS SELECT l.* FROM _long l ANTI JOIN clinical c"
                " ON c.dataset_id = ? AND c.pseudonym = l.pseudonym AND c.variable = l.variable",
                [dataset_id],
            )
            new_subjects = {r[0] for r in cur.execute("SELECT DISTINCT pseudonym FROM _new")
                            .fetchall()}
            upsert_persons(cur, "_persons", persons)
            cur.execute(
                "INSERT INTO clinical (dataset_id, pseudonym, variable, value_num, value_text)"
                " SELECT ?, pseudonym, variable, value_num, value_text FROM _new", [dataset_id])
        finally:
            with contextlib.suppress(duckdb.Error):  # aborted transaction: keep first error
                cur.execute("DROP TABLE IF EXISTS _new")
            release(cur, "_long", "_persons")
        report.ingested = len(new_subjects)
        report.already_present = len(frame) - report.ingested
        finish_batch(
            home, cur, report, source=str(path),
            params={"file": path.name, "id_column": id_column, "rows": int(len(keep)),
                    "variables": len(variables)},
        )
    progress.advance(int(len(keep)))
    return report
