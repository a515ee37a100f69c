"""Synthetic data end to end (issue 7): a node synthesises its real breast-cancer table,
the gate passes, `publish` uploads the table, reports and plots, researchers download
CSV and Parquet (audited); a copying "synthesizer" is stopped and nothing leaves; the
portal checks the gate again and the hospital of the uploader. Real Keycloak, real
portal over HTTP, real DuckDB files."""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
import pandas as pd
import pytest

from federation.node.portal_client import PortalError
from federation.node.service import publish
from federation.node.synthesis import (
    SynthesisError,
    latest,
    releasable,
    source_frame,
    synthesize,
    synthesize_if_cohort_changed,
    synthetic_dir,
)
from tests.fixtures.portal import bearer
from tests.synthetic_release.conftest import (
    DATASET,
    ROWS,
    cli,
    connect,
    read_csv_bytes,
    sha256,
)

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n"


def copy_rows(train: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """A 'synthesizer' that hands out training rows: the gate must stop it."""
    idx = rng.choice(len(train), size=n, replace=n > len(train))
    return train.iloc[idx].reset_index(drop=True)


def get(portal, path: str, token: str, **params) -> httpx.Response:
    return httpx.get(f"{portal.url}{path}", params=params, headers=bearer(token), timeout=30)


def portal_actions(portal) -> list[tuple[str, str, str]]:
    return [(e.actor, e.action, e.object_id) for e in portal.portal.audit.entries()]


def test_cli_summary_names_quality_gate_and_excluded_identifier(synthesised):
    out = synthesised.output
    assert "Release gate PASSED" in out and "quality" in out
    assert "specimen_code" in out and "identifier-like" in out, "excluded with a message"
    for check in ("exact_copies", "dcr_median_ratio", "mia_advantage", "inference_risk"):
        assert f"[PASS] {check}" in out
    info = latest(synthesised.home, DATASET)
    assert info["passed"] and info["rows"] == ROWS
    release = releasable(synthesised.home, DATASET)
    table = pd.read_parquet(io.BytesIO(release.table))
    assert len(table) == ROWS
    assert {"specimen_code", "pseudonym", "patient_id"}.isdisjoint(table.columns)
    assert "diagnosis" in table.columns and "mean radius" in table.columns
    assert "pair_trends.png" in release.plots
    generated = [e for e in synthesised.home.audit.entries() if e.action == "synthetic.generate"]
    assert generated and generated[-1].details["passed"] is True
    assert generated[-1].details["release_files"]["synthetic.parquet"] == sha256(release.table)


def test_publish_then_researchers_download_csv_and_parquet(synthesised, live_portal,
                                                          client_for, keycloak):
    home = synthesised.home
    connect(home, live_portal.url, keycloak)
    result = cli("publish", "--dataset-id", DATASET, "--home", str(home.path))
    assert result.exit_code == 0, result.output + result.stderr
    release = releasable(home, DATASET)
    assert f"synthetic version {release.run_id} uploaded ({ROWS} rows)" in result.stdout

    alice = keycloak.token("alice")
    resp = get(live_portal, f"/v1/catalogue/{DATASET}/synthetic", alice, format="parquet")
    assert resp.status_code == 200, resp.text
    assert resp.content == release.table, "the Parquet that passed the gate, byte for byte"
    assert "attachment" in resp.headers["content-disposition"]

    resp = get(live_portal, f"/v1/catalogue/{DATASET}/synthetic", alice,
               hospital_id="hospital-a", format="csv")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    csv = read_csv_bytes(resp.content)
    expected = pd.read_parquet(io.BytesIO(release.table))
    assert list(csv.columns) == list(expected.columns) and len(csv) == ROWS
    np.testing.assert_allclose(csv["mean radius"], expected["mean radius"], rtol=1e-12)
    assert (csv["diagnosis"] == expected["diagnosis"]).all()

    # auditors and reviewers may download; other roles and nodes may not
    assert get(live_portal, f"/v1/catalogue/{DATASET}/synthetic",
               keycloak.token("auditor1")).status_code == 200
    for token in (keycloak.token("steward1"), keycloak.client_token("hospital-a")):
        resp = get(live_portal, f"/v1/catalogue/{DATASET}/synthetic", token)
        assert resp.status_code == 403 and "synthetic.download" in resp.json()["detail"]
    assert get(live_portal, f"/v1/catalogue/{DATASET}/synthetic", alice,
               format="xlsx").status_code == 422

    # reports and plots
    base = f"/v1/catalogue/datasets/hospital-a/{DATASET}/synthetic"
    report = get(live_portal, f"{base}/report", alice).json()
    assert report["gate"]["passed"] is True and report["rows"] == ROWS
    assert report["report"]["fidelity"]["quality_score"] > 0.85
    assert report["report"]["privacy"] and "specimen_code" not in report["columns"]
    assert set(report["plots"]) == set(release.plots)
    for name in ("pair_trends.png", "marginal_diagnosis.png"):
        resp = get(live_portal, f"{base}/plots/{name}", alice)
        assert resp.status_code == 200 and resp.content.startswith(PNG)
        assert resp.content == release.plots[name]
    assert get(live_portal, f"{base}/plots/nope.png", alice).status_code == 404

    # every download is in the portal's audit log, with who and which format
    downloads = [e for e in live_portal.portal.audit.entries()
                 if e.action == "synthetic.download"]
    assert [(e.actor, e.details["format"]) for e in downloads] == [
        ("alice", "parquet"), ("alice", "csv"), ("auditor1", "csv")]
    assert all(e.object_id == f"hospital-a/{DATASET}" for e in downloads)
    assert downloads[0].details["sha256"] == sha256(release.table)
    assert live_portal.portal.audit.verify().ok
    published = [e for e in home.audit.entries() if e.action == "synthetic.publish"]
    assert published[-1].details["files"]["synthetic.parquet"] == sha256(release.table)


def test_copying_synthesizer_is_stopped_and_nothing_is_published(
        synthesised, live_portal, client_for, keycloak):
    home = synthesised.home
    from federation.node.ingest import ingest_table

    ingest_table(home, synthesised.csv, id_column="patient_id", dataset_id="bc-copied",
                 title="breast cancer, copied")
    outcome = synthesize(home, "bc-copied", synthesizer=copy_rows, rows=200,
                         consent_filter="regime")
    assert not outcome.passed and outcome.release_dir is None and outcome.files == {}
    failed = {c.name for c in outcome.result.gate.failed}
    assert {"exact_copies", "dcr_median_ratio", "mia_advantage"} <= failed
    # the reports are kept, nothing releasable is
    assert (outcome.run_dir / "report.json").is_file()
    assert not (outcome.run_dir / "release").exists()
    stored = [p.name for p in synthetic_dir(home, "bc-copied").rglob("*") if p.is_file()]
    assert not any(n.endswith((".csv", ".parquet", ".png")) for n in stored), stored
    with pytest.raises(SynthesisError, match="failed the release gate"):
        releasable(home, "bc-copied")
    audit = [e for e in home.audit.entries() if e.action == "synthetic.generate"][-1]
    assert audit.details["passed"] is False and "exact_copies" in audit.details["failed_checks"]

    results = publish(home, ["bc-copied"], client=client_for())
    assert results[0]["synthetic"]["published"] is False
    assert "failed the release gate" in results[0]["synthetic"]["reason"]
    alice = keycloak.token("alice")
    assert get(live_portal, "/v1/catalogue/bc-copied/synthetic", alice).status_code == 404
    assert get(live_portal, "/v1/catalogue/datasets/hospital-a/bc-copied/synthetic/report",
               alice).status_code == 404
    assert not any(a == "synthetic.publish" for _, a, _ in portal_actions(live_portal))
    assert any(e.action == "synthetic.publish_refused" for e in home.audit.entries())

    # even if a node sends the failed run, the portal re-checks the gate: 422
    report = (outcome.run_dir / "report.json").read_bytes()
    good = releasable(home, DATASET)
    with pytest.raises(PortalError) as err:
        client_for().upload_synthetic("hospital-a", "bc-copied", table=good.table,
                                      report=report, plots={})
    assert err.value.status == 422 and "did not pass" in str(err.value)
    assert "exact_copies" in str(err.value)


def test_portal_rechecks_figures_and_columns(synthesised, live_portal, client_for):
    home = synthesised.home
    publish(home, [DATASET], client=client_for(), synthetic=False)
    good = releasable(home, DATASET)
    client = client_for()

    forged = json.loads(good.report)
    mia = next(c for c in forged["gate"]["checks"] if c["name"] == "mia_advantage")
    mia["value"] = 0.8  # still marked passed
    with pytest.raises(PortalError) as err:
        client.upload_synthetic("hospital-a", DATASET, table=good.table,
                                report=json.dumps(forged).encode(), plots={})
    assert err.value.status == 422 and "mia_advantage" in str(err.value)

    # the upload route takes files above the general 1 MiB body limit; other routes do not
    big = {"large.png": PNG + bytes(3 * 1_048_576)}
    with pytest.raises(PortalError) as err:
        client.upload_synthetic("hospital-a", DATASET, table=good.table,
                                report=json.dumps(forged).encode(), plots=big)
    assert err.value.status == 422, "past the body limit, refused by the gate re-check"
    resp = httpx.post(f"{live_portal.url}/v1/catalogue/datasets", content=bytes(3 * 1_048_576),
                      headers={**bearer(client.access_token()),
                               "Content-Type": "application/json"})
    assert resp.status_code == 413

    with_ids = pd.read_parquet(io.BytesIO(good.table))
    with_ids.insert(0, "pseudonym", [f"ps_{i:032x}" for i in range(len(with_ids))])
    buf = io.BytesIO()
    with_ids.to_parquet(buf, index=False)
    with pytest.raises(PortalError) as err:
        client.upload_synthetic("hospital-a", DATASET, table=buf.getvalue(),
                                report=good.report, plots={})
    assert err.value.status == 422 and "not modelled: pseudonym" in str(err.value)

    with pytest.raises(PortalError) as err:
        client.upload_synthetic("hospital-a", DATASET, table=good.table, report=good.report,
                                plots={"evil.png": b"<svg/>"})
    assert err.value.status == 422 and "not a PNG" in str(err.value)
    assert not any(a == "synthetic.publish" for _, a, _ in portal_actions(live_portal))


def test_a_node_cannot_upload_for_another_hospital(synthesised, live_portal, client_for):
    home = synthesised.home
    publish(home, [DATASET], client=client_for(), synthetic=False)
    good = releasable(home, DATASET)
    with pytest.raises(PortalError) as err:
        client_for("hospital-b").upload_synthetic(
            "hospital-a", DATASET, table=good.table, report=good.report, plots=good.plots)
    assert err.value.status == 403 and "hospital-b" in str(err.value)
    # own hospital, but a dataset the catalogue does not hold
    with pytest.raises(PortalError) as err:
        client_for().upload_synthetic("hospital-a", "not-catalogued", table=good.table,
                                      report=good.report, plots={})
    assert err.value.status == 404 and "publish its descriptor first" in str(err.value)


def test_imaging_metadata_is_modelled_without_identifiers(synthesised, tmp_path):
    from pydicom.data import get_testdata_file

    from federation.node.ingest import ingest_dicom, ingest_medmnist
    from tre.core.settings import CommonSettings

    home = synthesised.home
    npz = CommonSettings().data_root / "medmnist" / "pneumoniamnist.npz"
    ingest_medmnist(home, npz, dataset_id="pneumonia", partition=(1, 8),
                    label_names={"0": "normal", "1": "pneumonia"})
    frame = source_frame(home, "pneumonia")
    assert list(frame.columns) == ["modality", "body_site", "study_date", "manufacturer",
                                   "label", "split", "sex", "birth_year"]
    assert set(frame["label"]) == {"normal", "pneumonia"} and len(frame) > 500
    from pathlib import Path

    ingest_dicom(home, Path(get_testdata_file("CT_small.dcm")).parent, dataset_id="bundled")
    dicom = source_frame(home, "bundled")
    assert {"CT", "MR"} <= set(dicom["modality"].dropna())
    assert dicom["study_date"].notna().any()

    outcome = synthesize(home, "pneumonia", rows=300, seed=0, consent_filter="regime")
    synthetic = outcome.result.synthetic
    assert set(synthetic.columns) <= set(frame.columns) and len(synthetic) == 300
    assert set(synthetic["label"].dropna()) <= {"normal", "pneumonia"}
    assert (outcome.release_dir is not None) == outcome.passed


def test_cli_errors_are_one_line(synthesised):
    home = str(synthesised.home.path)
    for args, needle in (
        (["synthesize", "no-such-dataset", "--home", home], "no dataset 'no-such-dataset'"),
        (["synthesize", DATASET, "--synthesizer", "gan", "--home", home],
         "unknown synthesizer 'gan': choose one of gaussian_copula, ctgan, tvae"),
        (["synthesize", DATASET, "--rows", "0", "--home", home], "--rows must be at least 1"),
        (["synthesize", DATASET, "--target", "nope", "--consent-filter", "regime", "--home",
          home], "target 'nope'"),
        (["synthesize", "../etc", "--home", home], "is invalid"),
    ):
        result = cli(*args)
        assert result.exit_code == 1, (args, result.output)
        err = result.stderr.strip()
        assert err.startswith("error:") and len(err.splitlines()) == 1, err
        assert needle in err, err


def test_consent_is_honoured_before_synthesis_reads_a_record(synthesised):
    """Opt-in without any consent record: nobody may be modelled, so nothing is read;
    the default filter without a pulled snapshot refuses outright."""
    from federation.node.refusal import Refusal
    from federation.node.synthesis import SynthesisError

    home = synthesised.home
    with home.db.transaction() as cur:
        cur.execute("UPDATE dataset SET consent_regime = 'opt-in' WHERE dataset_id = ?",
                    [DATASET])
    try:
        with pytest.raises(SynthesisError, match="no rows"):
            synthesize(home, DATASET, rows=50, consent_filter="regime")
        with pytest.raises(Refusal, match="consent snapshot"):
            synthesize(home, DATASET, rows=50)
    finally:
        with home.db.transaction() as cur:
            cur.execute("UPDATE dataset SET consent_regime = 'opt-out' WHERE dataset_id = ?",
                        [DATASET])


class CrashingSynthesizer:
    """A synthesizer whose fit dies, as SDV might: the read must already be audited."""

    name = "crashing"

    def fit(self, data: pd.DataFrame, plan: object) -> None:
        raise RuntimeError("the synthesizer crashed while fitting")

    def sample(self, num_rows: int) -> pd.DataFrame:
        raise AssertionError("never fitted")


def test_a_crash_inside_the_synthesizer_leaves_its_read_audited_once(synthesised):
    home = synthesised.home
    before, latest_before = home.audit.count(), latest(home, DATASET)
    with pytest.raises(RuntimeError, match="crashed while fitting"):
        synthesize(home, DATASET, synthesizer=CrashingSynthesizer(), rows=50,
                   consent_filter="regime")
    (read,) = home.audit.entries(after_seq=before)
    assert read.action == "data.read" and read.object_id == DATASET
    assert read.details["records"] == len(source_frame(home, DATASET))
    assert read.details["for"] == "synthesis" and read.details["by"] == "node operator"
    assert read.details["cohort_digest"] == latest_before["cohort_digest"]
    assert latest(home, DATASET) == latest_before, "nothing stored"


def test_an_unchanged_cohort_is_checked_without_a_data_read(synthesised):
    """The re-check needs the consented subjects, not their records: it is audited as
    what it is, and only a changed cohort is read (before it is synthesised)."""
    home = synthesised.home
    before, latest_before = home.audit.count(), latest(home, DATASET)
    assert synthesize_if_cohort_changed(home, DATASET, rows=ROWS, seed=0,
                                        consent_filter="regime") is None
    (entry,) = home.audit.entries(after_seq=before)
    assert entry.action == "synthetic.cohort_unchanged"
    assert entry.details["cohort_digest"] == latest_before["cohort_digest"]

    with home.db.transaction() as cur:  # under opt-in with no consent record: nobody
        cur.execute("UPDATE dataset SET consent_regime = 'opt-in' WHERE dataset_id = ?",
                    [DATASET])
    try:
        before = home.audit.count()
        with pytest.raises(SynthesisError, match="no rows"):
            synthesize_if_cohort_changed(home, DATASET, rows=ROWS, consent_filter="regime")
        assert home.audit.entries(after_seq=before) == [], "changed, but nothing to read"
    finally:
        with home.db.transaction() as cur:
            cur.execute("UPDATE dataset SET consent_regime = 'opt-out' WHERE dataset_id = ?",
                        [DATASET])
