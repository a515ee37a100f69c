"""Column plan: identifiers never modelled, dates as dates, classes as categories."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from synthetic import plan_table
from synthetic.metadata import identifier_name

pytestmark = pytest.mark.unit


def _table(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.integers(18, 90, n),
        "weight": rng.normal(75, 12, n),
        "label": rng.integers(0, 2, n),
        "grade": rng.integers(1, 6, n).astype(float),  # long clinical table stores DOUBLE
        "sex": rng.choice(["F", "M"], n),
        "smoker": rng.random(n) < 0.3,
        "birth_year": rng.integers(1930, 2010, n),
    })


def test_high_cardinality_identifier_is_excluded_with_a_message(breast_cancer):
    df = breast_cancer.copy()
    df["hospital_number"] = [f"H{i * 7919 % 100003:06d}X" for i in range(len(df))]
    plan = plan_table(df)
    excluded = {e.name: e.reason for e in plan.excluded}
    assert set(excluded) == {"patient_id", "hospital_number"}
    assert "identifier" in excluded["patient_id"]
    assert "high-cardinality" in excluded["hospital_number"]
    assert "hospital_number" in plan.message and "patient_id" in plan.message
    assert "hospital_number" not in plan.data.columns
    # the 30 real measurements stay, as numbers; the diagnosis is a class
    assert len(plan.names("numerical")) == 30
    assert plan.columns["diagnosis"].kind == "categorical"


@pytest.mark.parametrize("name", [
    "pseudonym", "patient_id", "PatientID", "study_id", "StudyInstanceUID", "uuid",
    "image_ref", "subject-id", "mrn", "email",
])
def test_identifier_names(name):
    assert identifier_name(name)


@pytest.mark.parametrize("name", [
    "thyroid", "carotid_plaque", "fluid_volume", "lipid", "covid", "diagnosis", "body_site",
    "manufacturer", "mean radius", "valid",
])
def test_clinical_names_are_not_identifiers(name):
    assert not identifier_name(name)


def test_unique_integer_key_is_excluded_but_measurements_stay():
    df = _table()
    df["row_number"] = np.arange(1000, 1000 + len(df))[::-1]
    plan = plan_table(df)
    reasons = {e.name: e.reason for e in plan.excluded}
    assert "key" in reasons["row_number"]
    assert plan.columns["age"].kind == "numerical"
    assert plan.columns["weight"].kind == "numerical"


def test_repeated_pseudonyms_are_excluded_by_name(imaging_metadata):
    assert imaging_metadata["pseudonym"].nunique() < len(imaging_metadata)
    plan = plan_table(imaging_metadata)
    assert {"pseudonym", "study_id", "image_ref"} <= {e.name for e in plan.excluded}


def test_kinds_of_columns():
    plan = plan_table(_table())
    kinds = {n: s.kind for n, s in plan.columns.items()}
    assert kinds == {
        "age": "numerical", "weight": "numerical", "label": "categorical",
        "grade": "categorical", "sex": "categorical", "smoker": "boolean",
        "birth_year": "numerical",
    }
    assert plan.columns["grade"].integer and plan.columns["birth_year"].integer
    # the SDV metadata is built from the checked kinds and carries no data-derived ranges
    cols = plan.metadata.to_dict()["tables"]["table"]["columns"]
    assert cols["label"] == {"sdtype": "categorical"}
    assert all(set(c) == {"sdtype"} for c in cols.values())


def test_dates_in_every_form_are_datetimes_and_stay_dates():
    n = 60
    days = [dt.date(2015, 1, 1) + dt.timedelta(days=3 * i) for i in range(n)]
    df = pd.DataFrame({
        "as_date": days,
        "as_iso": [d.isoformat() for d in days],
        "as_datetime64": pd.to_datetime(days).astype("datetime64[us]"),
        "as_timestamp": pd.to_datetime(days) + pd.to_timedelta(np.arange(n) % 24, unit="h"),
        "value": np.linspace(0, 1, n),
    })
    plan = plan_table(df)
    for c in ("as_date", "as_iso", "as_datetime64", "as_timestamp"):
        assert plan.columns[c].kind == "datetime", c
        assert str(plan.data[c].dtype) == "datetime64[ns]"
    assert plan.columns["as_date"].date_only and not plan.columns["as_timestamp"].date_only
    noon = plan.data.copy()
    noon["as_date"] = noon["as_date"] + pd.Timedelta(hours=12)
    restored = plan.restore(plan.conform(noon))
    assert (restored["as_date"] == restored["as_date"].dt.floor("D")).all()


def test_keep_overrides_the_name_rule_only():
    df = _table()
    df["site_id"] = np.random.default_rng(1).choice(["A", "B", "C"], len(df))
    assert "site_id" in {e.name for e in plan_table(df).excluded}
    assert plan_table(df, keep=["site_id"]).columns["site_id"].kind == "categorical"
    plan = plan_table(df, exclude=["weight"])
    assert {"weight": "excluded by the operator"}.items() <= {
        e.name: e.reason for e in plan.excluded}.items()


def test_restore_gives_integers_back():
    df = _table()
    df.loc[3, "birth_year"] = None  # nullable
    plan = plan_table(df)
    out = plan.restore(plan.conform(plan.data))
    assert str(out["label"].dtype) == "int64"
    assert str(out["birth_year"].dtype) == "Int64"
    assert str(out["smoker"].dtype) == "boolean"


def test_nothing_left_to_model_is_an_error():
    df = pd.DataFrame({"pseudonym": [f"p{i}" for i in range(30)], "study_id": range(30)})
    with pytest.raises(ValueError, match="no column left to model"):
        plan_table(df)
