"""Real tables for the synthetic-data tests (DESIGN §7): the breast-cancer table and
imaging metadata built on PneumoniaMNIST's real labels and pydicom's bundled files."""

from __future__ import annotations

import datetime as dt
import hashlib
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from tre.core.settings import CommonSettings


def breast_cancer_table() -> pd.DataFrame:
    """569 patients, 30 image-derived features, the diagnosis, and a patient id column."""
    data = load_breast_cancer(as_frame=True)
    df = data.frame.drop(columns="target")
    df["diagnosis"] = data.target.map({0: "malignant", 1: "benign"})
    df.insert(0, "patient_id", [f"BC-{i:05d}" for i in range(len(df))])
    return df


def _dicom_headers() -> list[dict]:
    """Acquisition metadata of pydicom's bundled image files (real headers)."""
    import pydicom
    from pydicom.data import get_testdata_files

    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files = get_testdata_files("*.dcm")
        for path in sorted(files):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            except Exception:
                continue
            modality = ds.get("Modality")
            date = str(ds.get("StudyDate") or "")
            if modality not in {"CT", "MR", "US", "NM", "CR", "DX"} or len(date) != 8:
                continue
            if not date.isdigit():
                continue
            birth = str(ds.get("PatientBirthDate") or "")
            rows.append({
                "modality": modality,
                "body_site": str(ds.get("BodyPartExamined") or "") or None,
                "study_date": dt.date(int(date[:4]), int(date[4:6]), int(date[6:])),
                "manufacturer": str(ds.get("Manufacturer") or "") or None,
                "sex": str(ds.get("PatientSex") or "") or None,
                "birth_year": int(birth[:4]) if birth[:4].isdigit() and birth[:4] > "1900"
                else None,
            })
    return rows


def imaging_metadata_table(n_pneumonia: int = 600, seed: int = 7) -> pd.DataFrame:
    """Rows shaped like the node's `imaging_study` joined with `person`.

    Labels are PneumoniaMNIST's real ones; manufacturers and the extra CT/MR/US/NM
    rows are the real headers of pydicom's files. MedMNIST carries no dates or ages,
    so study dates (2012-2016, when the source X-rays were taken) and ages of 1-5
    years (a paediatric cohort) are drawn at random.
    """
    rng = np.random.default_rng(seed)
    npz = np.load(CommonSettings().data_root / "medmnist" / "pneumoniamnist.npz")
    per_split = {"train": int(n_pneumonia * 0.7), "val": int(n_pneumonia * 0.15)}
    per_split["test"] = n_pneumonia - sum(per_split.values())
    headers = _dicom_headers()
    manufacturers = sorted({h["manufacturer"] for h in headers if h["manufacturer"]})
    rows = []
    for split, n in per_split.items():
        labels = npz[f"{split}_labels"][:n, 0]
        for i, label in enumerate(labels):
            day = dt.date(2012, 1, 1) + dt.timedelta(days=int(rng.integers(0, 5 * 365)))
            rows.append({
                "modality": "CR" if rng.random() < 0.8 else "DX",
                "body_site": "CHEST",
                "study_date": day,
                "manufacturer": manufacturers[int(rng.integers(0, min(3, len(manufacturers))))],
                "sex": "F" if rng.random() < 0.48 else "M",
                "birth_year": day.year - int(rng.integers(1, 6)),
                "label": int(label),
                "split": split,
                "_key": f"{split}-{i}",
            })
    for i, h in enumerate(headers):
        rows.append({**h, "label": None, "split": "test", "_key": f"dicom-{i}"})
    df = pd.DataFrame(rows)
    # A few people have two studies, so pseudonyms repeat (as in the common model).
    people = [hashlib.sha256(f"person-{i // 1 if i % 9 else i - 1}".encode()).hexdigest()[:16]
              for i in range(len(df))]
    df.insert(0, "pseudonym", people)
    df.insert(0, "study_id", [f"ST{i:06d}" for i in range(len(df))])
    df["image_ref"] = [f"img/{k}" for k in df.pop("_key")]
    df["label"] = df["label"].astype("Int64")
    return df


@pytest.fixture(scope="session")
def breast_cancer() -> pd.DataFrame:
    return breast_cancer_table()


@pytest.fixture(scope="session")
def imaging_metadata() -> pd.DataFrame:
    return imaging_metadata_table()


def copy_rows(train: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """A 'synthesizer' that hands out training rows."""
    idx = rng.choice(len(train), size=n, replace=n > len(train))
    return train.iloc[idx].reset_index(drop=True)


def copy_rows_with_noise(train: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Training rows with 0.1 % multiplicative noise on every number: no exact copies."""
    out = copy_rows(train, n, rng)
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col] * (1 + rng.normal(0, 1e-3, len(out)))
    return out


def diabetes_table() -> pd.DataFrame:
    """442 patients of scikit-learn's diabetes table in its original units, the disease
    progression after a year as an outcome (above or below the median), and an id."""
    from sklearn.datasets import load_diabetes

    df = load_diabetes(as_frame=True, scaled=False).frame
    progression = df.pop("target")
    df["outcome"] = np.where(progression > progression.median(), "progressed", "stable")
    df.insert(0, "patient_id", [f"DB-{i:05d}" for i in range(len(df))])
    return df


@pytest.fixture(scope="session")
def diabetes() -> pd.DataFrame:
    return diabetes_table()
