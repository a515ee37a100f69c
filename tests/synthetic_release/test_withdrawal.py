"""Withdrawal reaches published synthetic data (issue 14): a steward or the publishing
node withdraws a release, downloads answer 410 naming the withdrawal, the catalogue
shows it withdrawn, the audit chain holds the act; a node re-synthesises exactly when
its consented cohort changed. Real Keycloak, real portal over HTTP, real DuckDB files,
the real breast-cancer table."""

from __future__ import annotations

import json

import httpx
import pytest

from federation.node.descriptor import publication_body
from federation.node.portal_client import PortalError
from federation.node.service import descriptors, publish
from federation.node.store import dataset_pseudonyms
from federation.node.synthesis import (
    latest,
    releasable,
    synthesize,
    synthesize_if_cohort_changed,
)
from tests.fixtures.portal import bearer
from tests.synthetic_release.conftest import DATASET, ROWS, cli, connect
from tre.cli.main import app as cli_app

pytestmark = pytest.mark.integration

REASON = "a data subject withdrew consent for research"


def withdraw(portal, release_id: str, token: str, reason: str = REASON) -> httpx.Response:
    return httpx.post(f"{portal.url}/v1/catalogue/synthetic/{release_id}/withdraw",
                      json={"reason": reason}, headers=bearer(token), timeout=30)


def get(portal, path: str, token: str, **params) -> httpx.Response:
    return httpx.get(f"{portal.url}{path}", params=params, headers=bearer(token), timeout=30)


def steward_cli(*args: str):
    from typer.testing import CliRunner

    return CliRunner().invoke(cli_app, ["synthetic", "withdraw", *args],
                              catch_exceptions=False)


def test_withdrawn_release_is_refused_audited_and_shown(synthesised, live_portal, client_for,
                                                        keycloak):
    home = synthesised.home
    published = publish(home, [DATASET], client=client_for())[0]["synthetic"]
    release_id = published["release_id"]
    alice, steward = keycloak.token("alice"), keycloak.token("steward1")
    download = f"/v1/catalogue/{DATASET}/synthetic"
    base = f"/v1/catalogue/datasets/hospital-a/{DATASET}"
    assert get(live_portal, download, alice).status_code == 200
    assert get(live_portal, base, alice).json()["synthetic"]["status"] == "published"

    # who may not: a researcher (policy), another hospital's node (ownership); unknown: 404
    resp = withdraw(live_portal, release_id, alice)
    assert resp.status_code == 403 and "synthetic.withdraw" in resp.json()["detail"]
    with pytest.raises(PortalError) as err:
        client_for("hospital-b").withdraw_synthetic(release_id, REASON)
    assert err.value.status == 403 and "hospital-b" in str(err.value)
    resp = withdraw(live_portal, "syn_0123456789abcdef", steward)
    assert resp.status_code == 404 and "does not exist" in resp.json()["detail"]
    assert withdraw(live_portal, release_id, steward, reason="no").status_code == 422
    assert get(live_portal, download, alice).status_code == 200, "still served"

    # the steward's CLI withdraws it
    result = steward_cli(release_id, "--reason", REASON, "--portal", live_portal.url,
                         "--token", steward)
    assert result.exit_code == 1 and "plain http" in result.stderr, "only with --insecure"
    result = steward_cli(release_id, "--reason", REASON, "--portal", live_portal.url,
                         "--token", steward, "--insecure")
    assert result.exit_code == 0, result.output
    assert f"synthetic release {release_id} of hospital-a/{DATASET} withdrawn" in result.stdout

    for fmt in ("csv", "parquet"):
        resp = get(live_portal, download, alice, format=fmt)
        assert resp.status_code == 410 and resp.headers["content-type"].startswith(
            "application/problem+json")
        detail = resp.json()["detail"]
        assert release_id in detail and "withdrawn" in detail and "steward1" in detail
        assert REASON in detail
    plot = get(live_portal, f"{base}/synthetic/plots/pair_trends.png", alice)
    assert plot.status_code == 410
    report = get(live_portal, f"{base}/synthetic/report", alice).json()
    assert report["status"] == "withdrawn" and report["downloads"] == {}
    assert report["plots"] == [] and report["withdrawal"]["reason"] == REASON

    # the catalogue API shows it withdrawn, in the list and on the dataset
    listed = {(d["hospital_id"], d["dataset_id"]): d
              for d in get(live_portal, "/v1/catalogue", alice).json()}
    entry = listed[("hospital-a", DATASET)]["synthetic"]
    assert entry["status"] == "withdrawn" and entry["release_id"] == release_id
    assert entry["withdrawal"]["by"] == "steward1"
    assert get(live_portal, base, alice).json()["synthetic"]["status"] == "withdrawn"

    # the table and plots are gone from the portal's disk; the report (no rows) stays
    folder = live_portal.portal.settings.state_dir / "synthetic" / release_id
    assert not (folder / "synthetic.parquet").exists()
    assert not (folder / "synthetic.csv").exists() and not (folder / "plots").exists()
    assert (folder / "report.json").is_file()

    # twice: 409, the first withdrawal stands
    with pytest.raises(PortalError) as err:
        client_for().withdraw_synthetic(release_id, "withdrawn again by the node")
    assert err.value.status == 409 and "already withdrawn" in str(err.value)

    # audited once, in the portal's chain, which still verifies
    entries = [e for e in live_portal.portal.audit.entries() if e.action == "synthetic.withdraw"]
    assert [(e.actor, e.object_id, e.details["release_id"], e.details["reason"])
            for e in entries] == [("steward1", f"hospital-a/{DATASET}", release_id, REASON)]
    assert entries[0].details["files"]["synthetic.parquet"] == releasable(
        home, DATASET).files["synthetic.parquet"]
    assert live_portal.portal.audit.verify().ok

    # the withdrawn table cannot come back by a routine `publish`: 409, reported by the node
    again = publish(home, [DATASET], client=client_for())[0]["synthetic"]
    assert not again["published"] and "409" in again["reason"]
    assert release_id in again["reason"] and "synthesise again" in again["reason"]
    # a new synthesis of the same dataset is published as usual
    assert synthesize(home, DATASET, rows=ROWS, seed=1, consent_filter="regime").passed
    again = publish(home, [DATASET], client=client_for())[0]["synthetic"]
    assert again["published"] and again["release_id"] != release_id
    assert get(live_portal, download, alice).status_code == 200
    assert get(live_portal, base, alice).json()["synthetic"]["status"] == "published"


def test_the_node_withdraws_its_own_release(synthesised, live_portal, client_for, keycloak):
    home = synthesised.home
    connect(home, live_portal.url, keycloak)
    release_id = publish(home, [DATASET])[0]["synthetic"]["release_id"]

    result = cli("synthetic", "withdraw", DATASET, "--reason", "consented cohort changed",
                 "--home", str(home.path), "--json")
    assert result.exit_code == 0, result.output + result.stderr
    answer = json.loads(result.stdout)
    assert answer["release_id"] == release_id and answer["status"] == "withdrawn"
    uploader = [e.actor for e in live_portal.portal.audit.entries()
                if e.action == "synthetic.publish"][-1]
    assert answer["withdrawal"]["by"] == uploader, "the node's own service account"
    resp = get(live_portal, f"/v1/catalogue/{DATASET}/synthetic", keycloak.token("alice"))
    assert resp.status_code == 410 and "consented cohort changed" in resp.json()["detail"]
    node_entry = home.audit.entries(action="synthetic.withdraw")[-1]
    assert node_entry.details["release_id"] == release_id

    # again: the portal's 409 is a one-line error, and the failure is audited at the node
    result = cli("synthetic", "withdraw", DATASET, "--reason", "consented cohort changed",
                 "--home", str(home.path))
    assert result.exit_code == 1 and "409" in result.stderr
    assert "already withdrawn" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert home.audit.entries(action="synthetic.withdraw_failed")[-1].details["status"] == 409
    result = cli("synthetic", "withdraw", "never-published", "--reason", "nothing there",
                 "--home", str(home.path))
    assert result.exit_code == 1 and "never published" in result.stderr


def test_a_download_naming_no_hospital_skips_withdrawn_releases(synthesised, live_portal,
                                                                client_for, keycloak):
    """Two hospitals offer the dataset id: once one withdraws, the other's is served
    without ?hospital_id=; once both have, the 410 names both."""
    home = synthesised.home
    mine = publish(home, [DATASET], client=client_for())[0]["synthetic"]["release_id"]
    good = releasable(home, DATASET)
    other = client_for("hospital-b")
    other.publish_dataset(publication_body({**descriptors(home, [DATASET])[0],
                                            "hospital_id": "hospital-b"}))
    theirs = other.upload_synthetic("hospital-b", DATASET, table=good.table,
                                    report=good.report, plots=good.plots)["release_id"]
    alice, steward = keycloak.token("alice"), keycloak.token("steward1")
    download = f"/v1/catalogue/{DATASET}/synthetic"
    assert get(live_portal, download, alice).status_code == 422, "which hospital?"

    assert withdraw(live_portal, mine, steward).status_code == 200
    resp = get(live_portal, download, alice, format="parquet")
    assert resp.status_code == 200 and resp.content == good.table
    assert "hospital-b_" in resp.headers["content-disposition"]

    assert other.withdraw_synthetic(theirs, "our consented cohort changed")["status"] == \
        "withdrawn"
    resp = get(live_portal, download, alice)
    assert resp.status_code == 410
    assert "hospital-a" in resp.json()["detail"] and "hospital-b" in resp.json()["detail"]


def test_resynthesis_follows_the_consented_cohort(synthesised, live_portal, keycloak):
    """The latest run modelled every subject (opt-out, nobody objected). With the
    portal's consent registry and still no objection the cohort is the same: nothing
    runs. One objection later it differs, and the node synthesises again, once, whatever
    the gate then says of the new table."""
    home = synthesised.home
    connect(home, live_portal.url, keycloak)
    before = latest(home, DATASET)
    assert before["cohort_size"] == len(dataset_pseudonyms(home, DATASET))

    assert synthesize_if_cohort_changed(home, DATASET, rows=ROWS, seed=0) is None
    assert latest(home, DATASET)["run_id"] == before["run_id"]
    unchanged = home.audit.entries(action="synthetic.cohort_unchanged")[-1]
    assert unchanged.details["cohort_digest"] == before["cohort_digest"]

    subject = dataset_pseudonyms(home, DATASET)[7]
    resp = httpx.post(f"{live_portal.url}/v1/consents", headers=bearer(
        keycloak.token("steward1")), timeout=30, json={
        "subject": subject, "purposes": ["scientific_research"], "status": "withdrawn"})
    assert resp.status_code == 201, resp.text

    args = ("synthesize", DATASET, "--rows", str(ROWS), "--seed", "0", "--if-cohort-changed",
            "--home", str(home.path))
    result = cli(*args)
    after = latest(home, DATASET)
    # whether the new cohort's table passes the release gate is the gate's business
    # (a withdrawal reshuffles the hold-out split); the exit code follows its verdict
    assert result.exit_code == (0 if after["passed"] else 1), result.output + result.stderr
    assert after["run_id"] != before["run_id"]
    assert after["cohort_size"] == before["cohort_size"] - 1
    assert after["cohort_digest"] != before["cohort_digest"]
    generated = home.audit.entries(action="synthetic.generate")[-1]
    assert generated.details["cohort_digest"] == after["cohort_digest"]

    result = cli(*args)
    assert result.exit_code == 0 and "unchanged" in result.stdout
    assert latest(home, DATASET)["run_id"] == after["run_id"]
