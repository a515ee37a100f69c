"""Cohort queries over the common model: semantics on exact members, then what leaves."""

from __future__ import annotations

import time
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.datasets import load_breast_cancer

from federation.node.consent import SnapshotConsentFilter, apply_snapshot
from federation.node.errors import DataError
from federation.node.ingest import ingest_dicom, ingest_medmnist, ingest_table
from federation.node.query import cohort_members, run_query
from federation.node.refusal import Refusal
from federation.node.store import dataset_pseudonyms
from tre.core import disclosure as dc
from tre.core.disclosure import DISCLOSURE_KEY_PURPOSE, disclosed_count
from tre.core.schemas import CohortFilter, Purpose

pytestmark = pytest.mark.integration


@pytest.fixture
def loaded(node, pneumonia_npz, dicom_copy, tmp_path):
    ingest_medmnist(node, pneumonia_npz, dataset_id="pneumonia")
    ingest_dicom(node, dicom_copy(["CT_small.dcm", "MR_small.dcm", "examples_overlay.dcm"]),
                 dataset_id="scans")
    bc = load_breast_cancer(as_frame=True).frame
    bc.insert(0, "mrn", [f"W{i}" for i in range(len(bc))])
    bc.to_csv(tmp_path / "wdbc.csv", index=False)
    ingest_table(node, tmp_path / "wdbc.csv", id_column="mrn", dataset_id="wdbc")
    # Demographics of the two scanned patients, keyed by their DICOM PatientIDs.
    pd.DataFrame({"pid": ["1CT1", "4MR1"], "born": [1950, 1990], "bmi": [31.0, 19.5]}).to_csv(
        tmp_path / "demo.csv", index=False)
    ingest_table(node, tmp_path / "demo.csv", id_column="pid", dataset_id="demo",
                 birth_year_column="born")
    with np.load(pneumonia_npz) as d:
        labels = np.concatenate([d[f"{s}_labels"][:, 0] for s in ("train", "val", "test")])
    return node, bc, labels


def members(home, **cohort):
    return cohort_members(home.db, CohortFilter(**cohort), today=date(2005, 1, 1))


def test_cohort_semantics(loaded):
    home, bc, labels = loaded
    m = members(home)
    assert len(m["pneumonia"].subjects) == len(m["pneumonia"].studies) == len(labels)
    assert len(m["pneumonia"].by_label[1]) == int((labels == 1).sum())
    assert len(m["wdbc"].subjects) == 569 and len(m["scans"].subjects) == 3

    m = members(home, modality=["cr"])
    assert len(m["pneumonia"].subjects) == len(labels) and not m["scans"].subjects
    m = members(home, dataset_id="pneumonia", label=[1])
    assert list(m) == ["pneumonia"] and len(m["pneumonia"].subjects) == (labels == 1).sum()
    m = members(home, study_date_from="2005-01-01")
    assert len(m["scans"].studies) == 1 and not m["pneumonia"].subjects
    m = members(home, clinical={"mean radius": {"min": 15}})
    assert len(m["wdbc"].subjects) == int((bc["mean radius"] >= 15).sum())
    assert not m["pneumonia"].subjects and not m["scans"].subjects
    m = members(home, clinical={"mean radius": {"min": 12, "max": 14}, "mean texture": {"max": 20}})
    expected = bc["mean radius"].between(12, 14) & (bc["mean texture"] <= 20)
    assert len(m["wdbc"].subjects) == int(expected.sum())
    m = members(home, sex=["f"])
    assert len(m["scans"].subjects) == 1 and not m["wdbc"].subjects
    m = members(home, clinical={"no such variable": {"min": 0}})
    assert all(not d.subjects for d in m.values())


def test_age_is_study_year_minus_birth_year_else_current_year(loaded):
    home, *_ = loaded
    # CT 2004, born 1950: 54 at the study. MR 2004, born 1990: 14.
    m = members(home, age_min=50, age_max=60)
    assert len(m["scans"].studies) == 1
    assert len(m["demo"].subjects) == 1  # 'today' is 2005: 55 and 15
    m = cohort_members(home.db, CohortFilter(age_min=50, age_max=60), today=date(2026, 6, 1))
    assert len(m["scans"].studies) == 1  # the study date decides, not today
    assert not m["demo"].subjects         # 76 and 36 today
    m = members(home, age_max=150)
    assert not m["pneumonia"].subjects    # unknown birth year never matches an age range


def test_clinical_dataset_counts_subjects_with_a_matching_study(loaded):
    home, *_ = loaded
    m = members(home, modality=["CT"])
    assert len(m["demo"].subjects) == 1 and not m["wdbc"].subjects


def test_disclosed_answer(loaded):
    home, _, labels = loaded
    result = run_query(home, CohortFilter())
    by_id = {d["dataset_id"]: d for d in result["datasets"]}
    assert set(by_id) == {"pneumonia", "scans", "wdbc", "demo"}
    pn = by_id["pneumonia"]
    assert abs(pn["subjects"] - len(labels)) <= 4 and pn["subjects"] % 5 == 0
    assert set(pn["by_label"]) == {"normal", "pneumonia"}
    assert pn["studies"] == pn["subjects"]  # one study each: one perturbation, not two
    assert by_id["scans"]["subjects"] == "<10" and by_id["scans"]["studies"] == "<10"
    assert by_id["demo"]["subjects"] == "<10"
    assert abs(by_id["wdbc"]["subjects"] - 569) <= 4
    # Zero cells are shown, suppressed: their absence would reveal them.
    result = run_query(home, CohortFilter(dataset_id="pneumonia", label=[0]))
    assert result["datasets"][0]["by_label"]["pneumonia"] == "<10"
    with pytest.raises(DataError, match="'elsewhere' is not held here; held: demo, pneumonia"):
        run_query(home, CohortFilter(dataset_id="elsewhere"))
    # Same question, same answer: repeating a query gives nothing to average.
    again = run_query(home, CohortFilter())
    assert again["datasets"] == run_query(home, CohortFilter())["datasets"]
    high_k = run_query(home, CohortFilter(dataset_id="wdbc",
                                          clinical={"mean radius": {"min": 20}}), k=50)
    assert high_k["k"] == 50 and high_k["datasets"][0]["subjects"] == "<50"


def test_every_number_that_leaves_is_a_multiple_of_five_at_least_k(loaded):
    home, bc, _ = loaded
    for cohort in [{}, {"label": [1]}, {"modality": ["MR"]}, {"sex": ["M"]},
                   {"clinical": {"mean radius": {"max": 11}}}, {"age_min": 10}]:
        result = run_query(home, CohortFilter(**cohort))
        values = []
        for d in result["datasets"]:
            values += [d["subjects"], d.get("studies", "<10"), *d.get("by_label", {}).values()]
        for v in values:
            assert v == "<10" or (isinstance(v, int) and v >= 10 and v % 5 == 0), (cohort, v)


def test_a_cohort_about_what_the_node_does_not_hold_is_an_error_naming_what_it_holds(loaded):
    home, *_ = loaded
    before = home.audit.count()
    with pytest.raises(DataError, match="no clinical variable 'height' in wdbc; known: .*"
                                        "mean radius"):
        run_query(home, CohortFilter(dataset_id="wdbc", clinical={"height": {"min": 1}}))
    with pytest.raises(DataError, match="label filters imaging studies"):
        run_query(home, CohortFilter(dataset_id="wdbc", label=[1]))
    assert home.audit.count() == before  # nothing was asked of the data


def test_queries_are_audited_without_their_answers(loaded):
    home, *_ = loaded
    before = home.audit.count()
    cohort = CohortFilter(modality=["CR"], label=[1])
    run_query(home, cohort)
    entry = home.audit.entries(after_seq=before)[-1]
    assert entry.action == "query.cohort"
    assert entry.details["cohort"]["modality"] == ["CR"]
    assert set(entry.details) == {"cohort", "purpose", "k", "datasets"}
    assert home.audit.verify().ok


def test_differencing_attack_on_the_node_fails(loaded):
    """An attacker narrows a clinical range one patient at a time and subtracts."""
    home, bc, _ = loaded
    radii = np.sort(bc["mean radius"].unique())[150:350]
    chain = []
    for r in radii:
        cohort = CohortFilter(dataset_id="wdbc", clinical={"mean radius": {"max": float(r)}})
        true = len(cohort_members(home.db, cohort)["wdbc"].subjects)
        shown = run_query(home, cohort)["datasets"][0]["subjects"]
        chain.append((true, shown))
    pairs = [(a, b) for a, b in zip(chain, chain[1:], strict=False)] + [
        (a, b) for a, b in zip(chain, chain[2:], strict=False)] + [
        (a, b) for a, b in zip(chain, chain[3:], strict=False)]
    small = [((t1, s1), (t2, s2)) for (t1, s1), (t2, s2) in pairs if 1 <= t2 - t1 <= 3]
    assert len(small) > 150
    # Subtracting two answers never gives the 1-3 patients between them.
    assert all(s2 - s1 != t2 - t1 for (t1, s1), (t2, s2) in small)
    # Locating a rounding step (R -> R+5 one patient apart) would pin the exact count
    # (R+3) under rounding alone; with cell-key perturbation it mostly misleads.
    steps = [(s1, t2) for (t1, s1), (t2, s2) in small if t2 - t1 == 1 and s2 > s1]
    plain = [(dc.disclose(t1), t2) for (t1, _), (t2, _) in small
             if t2 - t1 == 1 and dc.disclose(t2) > dc.disclose(t1)]
    assert plain and all(r + 3 == t for r, t in plain)
    assert len(steps) > 20
    assert sum(r + 3 == t for r, t in steps) / len(steps) < 0.45


def install_withdrawals(home, subjects: list[str], purposes: list[str]) -> None:
    """A consent snapshot in the node's cache, as a pull from the portal installs it:
    each of `subjects` withdrew consent for `purposes`."""
    n = len(subjects)
    apply_snapshot(home, pa.table({
        "consent_id": [f"cns-{i}" for i in range(n)], "subject": subjects,
        "organisation": ["steward"] * n, "purposes": [purposes] * n,
        "status": ["withdrawn"] * n, "valid_from": pa.array([None] * n, pa.date32()),
        "valid_to": pa.array([None] * n, pa.date32()), "version": [1] * n}),
        kind="full", since=0, version=1, portal_url="test", now=time.time())


def test_the_operators_count_leaves_out_withdrawn_subjects_and_audits_one_query(loaded):
    home, *_ = loaded
    everyone = dataset_pseudonyms(home, "wdbc")
    install_withdrawals(home, everyone[:100], ["scientific_research"])
    cohort = CohortFilter(dataset_id="wdbc")
    before = home.audit.count()
    result = run_query(home, cohort, consent_filter=SnapshotConsentFilter(home, pull=False))
    shown = result["datasets"][0]["subjects"]
    assert shown == disclosed_count(everyone[100:], k=10,
                                    secret=home.derive_key(DISCLOSURE_KEY_PURPOSE))
    assert abs(shown - 469) <= 4
    consent, query = home.audit.entries(after_seq=before)
    assert consent.action == "consent.filter" and consent.details["excluded"] == 100
    assert consent.details["purpose"] == "scientific_research"
    assert query.action == "query.cohort" and set(query.details) == {"cohort", "purpose", "k",
                                                                     "datasets"}
    assert query.details["purpose"] == "scientific_research"  # whichever consent filter
    # consent is for a purpose: a withdrawal from research leaves statistics alone
    result = run_query(home, cohort, purpose=Purpose.STATISTICS,
                       consent_filter=SnapshotConsentFilter(home, pull=False))
    assert abs(result["datasets"][0]["subjects"] - 569) <= 4


def test_a_refused_count_is_audited_once_and_counts_nothing(loaded):
    home, *_ = loaded
    before = home.audit.count()
    with pytest.raises(Refusal) as err:  # never pulled: no consent state to rely on
        run_query(home, CohortFilter(dataset_id="wdbc"),
                  consent_filter=SnapshotConsentFilter(home, pull=False))
    assert err.value.code == "consent-stale"
    (entry,) = home.audit.entries(after_seq=before)
    assert entry.action == "query.refused" and entry.details["code"] == "consent-stale"
    assert entry.details["stage"] == "consent"
    assert entry.details["cohort"] == CohortFilter(dataset_id="wdbc").model_dump(mode="json")
