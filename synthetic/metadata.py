"""Decide how each column of a table is modelled, and which columns are never modelled.

SDV's own detection is run first (`Metadata.detect_from_dataframes`), then every
column is checked by rules that put privacy first:

* identifiers and pseudonyms are never modelled: a column whose name looks like a
  key (``id``, ``*_id``, ``pseudonym``, ``uid``, ``mrn``, ``image_ref`` ...), a
  string column whose non-null values are >= 95 % unique, an integer column whose
  values are all unique and look like a key (monotonic or a dense run), or a
  column SDV calls ``id`` or PII. A synthesizer would either copy them (a direct
  identifier in the release) or learn nothing useful from them.
* dates and timestamps are modelled as ``datetime``, also when they arrive as
  ISO strings or ``datetime.date`` objects; date-only columns come back as dates.
* integers (or integer-valued floats, as the long clinical table stores them) with
  few distinct small values (<= 10 values, all within +-100), booleans and strings
  are ``categorical``: a 0/1 label or a grade is a class, not a measurement, while
  a birth year stays a (rounded) number.

The outcome is a `TablePlan`: the prepared frame of the modelled columns, the SDV
metadata built from the checked column kinds (no data-derived ranges in it, so it
is safe to show), and the list of excluded columns with the reason for each.
"""

from __future__ import annotations

import datetime as dt
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from sdv.metadata import Metadata

TABLE_NAME = "table"

ColumnKind = Literal["numerical", "categorical", "datetime", "boolean"]

#: Integer columns with at most this many distinct values are modelled as categories.
MAX_INTEGER_CATEGORIES = 10
#: ... and whose values are small codes (0/1 labels, grades 1-5); years stay numbers.
MAX_CODE_VALUE = 100
#: Share of unique non-null values above which a string column is an identifier.
UNIQUE_STRING_SHARE = 0.95
#: Below this many non-null values uniqueness says nothing (every value may be rare).
MIN_ROWS_FOR_UNIQUENESS = 20

_ID_TOKENS = {
    "id", "ids", "uid", "uuid", "guid", "pseudonym", "pseudonyms", "pseudo", "mrn", "ssn",
    "nhs", "accession", "ref", "email", "phone", "address", "postcode", "zip",
}
_ID_WORDS = {
    "patientid", "subjectid", "studyid", "personid", "recordid", "imageid", "seriesid",
    "instanceid", "sopinstanceuid", "studyinstanceuid", "seriesinstanceuid", "patientname",
    "firstname", "lastname", "surname", "fullname", "name", "dob", "dateofbirth",
}
_SDV_PII_SDTYPES = {"id", "email", "phone_number", "address", "name", "first_name",
                    "last_name", "ssn", "ipv4_address", "ipv6_address", "credit_card_number"}


@dataclass(frozen=True)
class ExcludedColumn:
    """A column kept out of the model, and why (shown to the node operator)."""

    name: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason}


@dataclass(frozen=True)
class ColumnSpec:
    """How one modelled column is treated."""

    name: str
    kind: ColumnKind
    reason: str
    detected_sdtype: str | None = None
    date_only: bool = False
    integer: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "reason": self.reason,
            "sdv_detected": self.detected_sdtype,
            "date_only": self.date_only,
            "integer": self.integer,
        }


@dataclass
class TablePlan:
    """The checked modelling plan of one table."""

    data: pd.DataFrame
    columns: dict[str, ColumnSpec]
    excluded: list[ExcludedColumn]
    metadata: Metadata
    notes: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        """One line for the operator: what was excluded and why."""
        if not self.excluded:
            return "No column excluded from modelling."
        parts = [f"{e.name} ({e.reason})" for e in self.excluded]
        return "Excluded from modelling (never synthesised): " + "; ".join(parts)

    def names(self, *kinds: ColumnKind) -> list[str]:
        """Modelled column names of the given kinds (all when none given), in table order."""
        return [c for c, s in self.columns.items() if not kinds or s.kind in kinds]

    def conform(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Rows (e.g. sampled ones) in the modelled representation, date-only dates floored.

        Reports compare real and synthetic rows in this one representation.
        """
        missing = [c for c in self.columns if c not in rows.columns]
        if missing:
            raise ValueError(f"rows lack modelled column(s): {', '.join(missing)}")
        out = conform(rows, self.columns)
        for name, spec in self.columns.items():
            if spec.kind == "datetime" and spec.date_only:
                out[name] = out[name].dt.floor("D")
            elif spec.kind == "numerical" and spec.integer:
                out[name] = out[name].round()
        return out

    def restore(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Conformed rows with the types a researcher expects (whole numbers as integers)."""
        out = rows[list(self.columns)].copy()
        for name, spec in self.columns.items():
            if spec.integer:
                num = pd.to_numeric(out[name], errors="coerce").round()
                out[name] = num.astype("Int64") if num.isna().any() else num.astype("int64")
            elif spec.kind == "boolean":
                out[name] = out[name].astype("boolean")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "columns": [s.as_dict() for s in self.columns.values()],
            "excluded": [e.as_dict() for e in self.excluded],
            "notes": list(self.notes),
            "message": self.message,
        }


def _name_tokens(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name))
    return [t for t in re.split(r"[^0-9A-Za-z]+", spaced.lower()) if t]


def identifier_name(name: str) -> bool:
    """True when a column name says 'identifier' (``pseudonym``, ``study_id``, ``PatientID``)."""
    tokens = _name_tokens(name)
    if not tokens:
        return False
    if any(t in _ID_TOKENS for t in tokens):
        return True
    return "".join(tokens) in _ID_WORDS


def _is_date_object(v: Any) -> bool:
    return isinstance(v, dt.date | pd.Timestamp | np.datetime64)


def _as_datetime(col: pd.Series) -> pd.Series | None:
    """The column as tz-naive datetime64 if every non-null value is a date or an ISO date."""
    if pd.api.types.is_datetime64_any_dtype(col):
        out = col
    elif col.dtype == object or pd.api.types.is_string_dtype(col):
        nonnull = col.dropna()
        if nonnull.empty:
            return None
        if all(_is_date_object(v) for v in nonnull):
            out = pd.to_datetime(col, errors="coerce")
        else:
            if not all(isinstance(v, str) for v in nonnull):
                return None
            sample = nonnull.astype(str)
            if not sample.str.match(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?").all():
                return None
            out = pd.to_datetime(col, errors="coerce", format="ISO8601")
            if out.notna().sum() != len(nonnull):
                return None
    else:
        return None
    if getattr(out.dt, "tz", None) is not None:
        out = out.dt.tz_convert("UTC").dt.tz_localize(None)
    return out.astype("datetime64[ns]")


def _integer_valued(col: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(col):
        return False
    if pd.api.types.is_integer_dtype(col):
        return True
    if pd.api.types.is_float_dtype(col):
        vals = col.dropna().to_numpy(dtype=float)
        return len(vals) > 0 and bool(np.all(np.isfinite(vals)) and np.all(vals == np.round(vals)))
    return False


def _looks_like_integer_key(col: pd.Series) -> bool:
    vals = col.dropna().to_numpy(dtype=float)
    n = len(vals)
    if n < MIN_ROWS_FOR_UNIQUENESS or len(np.unique(vals)) != n:
        return False
    diffs = np.diff(vals)
    monotonic = bool(np.all(diffs > 0) or np.all(diffs < 0))
    dense = (vals.max() - vals.min() + 1) <= 2 * n
    return monotonic or dense


def detect_sdv_sdtypes(df: pd.DataFrame, max_rows: int = 10_000) -> dict[str, str]:
    """SDV's own guess per column (kept in the plan so disagreements are visible).

    Advisory only, so large tables are detected on a seeded sample of `max_rows`.
    """
    if len(df) > max_rows:
        df = df.sample(n=max_rows, random_state=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            md = Metadata.detect_from_dataframes({TABLE_NAME: df}, infer_keys=None)
        cols = md.to_dict()["tables"][TABLE_NAME]["columns"]
        return {str(k): v.get("sdtype", "unknown") for k, v in cols.items()}
    except Exception:  # detection is advisory; our rules decide
        return {}


def plan_table(
    df: pd.DataFrame,
    *,
    exclude: Sequence[str] = (),
    keep: Sequence[str] = (),
    max_integer_categories: int = MAX_INTEGER_CATEGORIES,
) -> TablePlan:
    """Detect, then check, how each column is modelled; drop identifiers with a reason.

    `exclude` names extra columns to leave out; `keep` overrides the name rules only
    (ours and SDV's, for a low-cardinality column such as ``site_id`` that is not an
    identifier): the uniqueness rules still apply to it.
    """
    if df.empty or len(df.columns) == 0:
        raise ValueError("the table is empty: nothing to synthesise")
    df = df.copy()
    df.columns = [str(c) for c in df.columns]
    if len(set(df.columns)) != len(df.columns):
        raise ValueError("the table has duplicate column names")
    unknown = [c for c in [*exclude, *keep] if c not in df.columns]
    if unknown:
        raise ValueError(f"unknown column(s) named in exclude/keep: {', '.join(unknown)}")

    detected = detect_sdv_sdtypes(df)
    excluded: list[ExcludedColumn] = []
    specs: dict[str, ColumnSpec] = {}
    notes: list[str] = []

    for name in df.columns:
        col = df[name]
        sdv_type = detected.get(name)
        nonnull = col.dropna()
        n = len(nonnull)
        if name in exclude:
            excluded.append(ExcludedColumn(name, "excluded by the operator"))
            continue
        if n == 0:
            excluded.append(ExcludedColumn(name, "no values (all missing)"))
            continue
        if identifier_name(name) and name not in keep:
            excluded.append(ExcludedColumn(
                name, "identifier, pseudonym or direct personal data (column name)"))
            continue

        as_dt = _as_datetime(col)
        if as_dt is not None:
            date_only = bool((as_dt.dropna() == as_dt.dropna().dt.floor("D")).all())
            specs[name] = ColumnSpec(name, "datetime", "dates and times", sdv_type, date_only)
            continue

        if pd.api.types.is_bool_dtype(col) or (
            col.dtype == object and all(isinstance(v, bool | np.bool_) for v in nonnull)
        ):
            specs[name] = ColumnSpec(name, "boolean", "true/false values", sdv_type)
            continue

        if pd.api.types.is_numeric_dtype(col):
            integer = _integer_valued(col)
            n_unique = nonnull.nunique()
            small_codes = float(nonnull.abs().max()) <= MAX_CODE_VALUE
            if integer and n_unique <= max_integer_categories and small_codes:
                specs[name] = ColumnSpec(
                    name, "categorical",
                    f"integer with {n_unique} distinct values (a class, not a measurement)",
                    sdv_type, integer=True,
                )
                continue
            if integer and _looks_like_integer_key(col):
                excluded.append(ExcludedColumn(
                    name, "unique integers that look like a key (every value distinct, "
                    "monotonic or a dense run)"))
                continue
            if integer and not pd.api.types.is_integer_dtype(col):
                notes.append(f"{name}: integer-valued floats, synthesised values are rounded")
            specs[name] = ColumnSpec(name, "numerical", "numeric measurement", sdv_type,
                                     integer=integer)
            continue

        n_unique = nonnull.astype(str).nunique()
        if n >= MIN_ROWS_FOR_UNIQUENESS and n_unique / n >= UNIQUE_STRING_SHARE:
            excluded.append(ExcludedColumn(
                name, f"high-cardinality text ({n_unique} distinct of {n} values, "
                f">= {UNIQUE_STRING_SHARE:.0%} unique): identifier-like"))
            continue
        if sdv_type in _SDV_PII_SDTYPES and name not in keep:
            excluded.append(ExcludedColumn(name, f"personal data (SDV detected '{sdv_type}')"))
            continue
        specs[name] = ColumnSpec(name, "categorical", f"text with {n_unique} distinct values",
                                 sdv_type)

    if not specs:
        raise ValueError(
            "no column left to model after excluding identifiers: "
            + "; ".join(f"{e.name} ({e.reason})" for e in excluded)
        )
    for name, spec in specs.items():
        sdv_type = spec.detected_sdtype
        if sdv_type and sdv_type != spec.kind and not (
            sdv_type == "ordinal" and spec.kind == "categorical"
        ):
            notes.append(f"{name}: SDV detected '{sdv_type}', modelled as '{spec.kind}'")
    data = conform(df, specs)
    metadata = build_metadata(specs)
    return TablePlan(data=data, columns=specs, excluded=excluded, metadata=metadata, notes=notes)


def conform_column(col: pd.Series, spec: ColumnSpec) -> pd.Series:
    """One column in the modelled representation (the same for real and synthetic rows).

    datetime64[ns] for dates, float64 for numbers, Python objects (str, int, bool or
    None) for categories, so that SDV and the reports see one dtype per column.
    """
    if spec.kind == "datetime":
        out = _as_datetime(col)
        if out is None:
            out = pd.to_datetime(col, errors="coerce", format="mixed")
            if getattr(out.dt, "tz", None) is not None:
                out = out.dt.tz_convert("UTC").dt.tz_localize(None)
        return out.astype("datetime64[ns]")
    if spec.kind == "numerical":
        return pd.to_numeric(col, errors="coerce").astype(float)
    obj = col.astype(object)
    missing = col.isna().to_numpy()
    if spec.kind == "boolean":
        values = [None if m else bool(v) for v, m in zip(obj, missing, strict=True)]
    elif spec.integer:
        num = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
        values = [None if np.isnan(v) else int(round(v)) for v in num]
    else:
        values = [None if m else str(v) for v, m in zip(obj, missing, strict=True)]
    return pd.Series(values, index=col.index, dtype=object, name=col.name)


def conform(df: pd.DataFrame, specs: dict[str, ColumnSpec]) -> pd.DataFrame:
    """The modelled columns of `df` in the modelled representation, in plan order."""
    return pd.DataFrame({name: conform_column(df[name], spec) for name, spec in specs.items()},
                        index=df.index)


def build_metadata(specs: dict[str, ColumnSpec]) -> Metadata:
    """SDV metadata from checked column kinds only (no ranges or values from the data)."""
    columns = {name: {"sdtype": spec.kind} for name, spec in specs.items()}
    md = Metadata.load_from_dict(
        {"tables": {TABLE_NAME: {"columns": columns}}, "relationships": [],
         "METADATA_SPEC_VERSION": "V2"}
    )
    md.validate()
    return md
