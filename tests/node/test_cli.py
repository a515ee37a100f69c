"""`tre node` end to end through the CLI: enrolment against the real portal, ingestion,
status, query, publish dry-run, audit; bad input gives one line and a non-zero exit."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from federation.node.home import NodeHome
from federation.provision import provision
from tre.cli.main import app

pytestmark = pytest.mark.integration


def portal_args(server) -> list[str]:  # noqa: ANN001 - LivePortal
    """The portal over verified TLS: its URL and the CA its certificate chains to."""
    return ["--portal", server.url, "--portal-ca", str(server.verify), "--offline-pseudonyms"]


@pytest.fixture
def cli(monkeypatch):
    monkeypatch.delenv("TRE_NODE_CLIENT_ID", raising=False)
    monkeypatch.delenv("TRE_NODE_CLIENT_SECRET", raising=False)
    runner = CliRunner()

    def run(*args: str, input: str | None = None):
        return runner.invoke(app, ["node", *args], input=input, catch_exceptions=False)

    return run


def one_line_error(result, *needles: str) -> None:
    assert result.exit_code != 0
    err = result.stderr.strip()
    assert err.startswith("error:"), err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture
def enrolled(cli, tmp_path, portal_server):
    home = tmp_path / "node"
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({"client_id": "node-hospital-a", "client_secret": "s3cret"}))
    result = cli("init", "--hospital-id", "hospital-a", *portal_args(portal_server),
                 "--home", str(home), "--credentials-file", str(creds),
                 "--superlink", "127.0.0.1:1")
    assert result.exit_code == 0, result.output + result.stderr
    return home


def test_init_pins_the_portals_permit_keys(enrolled, portal_server, cli):
    home = NodeHome(enrolled)
    assert home.permit_jwks() == portal_server.jwks()
    assert home.config.hospital_id == "hospital-a"
    mode = stat.S_IMODE(os.stat(enrolled / "credentials.json").st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(enrolled / "federation.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(enrolled / "node.duckdb").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(enrolled).st_mode) == 0o700
    assert home.credentials() == {"client_id": "node-hospital-a", "client_secret": "s3cret"}
    assert [e.action for e in home.audit.entries()] == ["node.init"]
    again = cli("init", "--hospital-id", "hospital-a", *portal_args(portal_server),
                "--home", str(enrolled))
    one_line_error(again, "already the home of node hospital-a", "--force")
    other = cli("init", "--hospital-id", "hospital-b", *portal_args(portal_server),
                "--home", str(enrolled), "--force")
    one_line_error(other, "belongs to hospital hospital-a")
    key = (enrolled / "federation.key").read_bytes()
    forced = cli("init", "--hospital-id", "hospital-a", *portal_args(portal_server),
                 "--home", str(enrolled), "--force")
    assert forced.exit_code == 0
    assert (enrolled / "federation.key").read_bytes() == key  # pseudonyms survive re-enrolment


def test_init_errors(cli, tmp_path, portal_server):
    dead = "http://127.0.0.1:9"
    one_line_error(cli("init", "--hospital-id", "h", "--portal", dead, "--home",
                       str(tmp_path / "x"), "--insecure", "--offline-pseudonyms"),
                   "cannot reach", "is the portal running there")
    # how patient ids become pseudonyms is a choice the operator makes, never a default
    one_line_error(cli("init", "--hospital-id", "h", "--portal", portal_server.url,
                       "--portal-ca", str(portal_server.verify), "--home",
                       str(tmp_path / "x")), "--pseudonymiser URL", "--offline-pseudonyms")
    one_line_error(cli("init", "--hospital-id", "h", "--portal", portal_server.url,
                       "--portal-ca", str(portal_server.verify), "--pseudonymiser", dead,
                       "--home", str(tmp_path / "x")), "pseudonymiser URL", "plain http")
    one_line_error(cli("init", "--hospital-id", "h", "--portal", portal_server.url,
                       "--portal-ca", str(portal_server.verify), "--pseudonymiser", dead,
                       "--insecure", "--home", str(tmp_path / "x")),
                   "does not answer", "tre pseudonymiser serve")
    # whoever answers init decides which permits the node accepts: no plain http, and
    # no portal whose certificate does not chain to the CA given
    one_line_error(cli("init", "--hospital-id", "h", "--portal", dead, "--home",
                       str(tmp_path / "x"), "--offline-pseudonyms"), "plain http", "--insecure")
    other_ca = provision(tmp_path / "other-pki", []).ca_cert
    one_line_error(cli("init", "--hospital-id", "h", "--portal", portal_server.url,
                       "--portal-ca", str(other_ca), "--home", str(tmp_path / "x"),
                       "--offline-pseudonyms"), "CERTIFICATE_VERIFY_FAILED")
    one_line_error(cli("init", "--hospital-id", "bad id", *portal_args(portal_server),
                       "--home", str(tmp_path / "y")), "hospital id")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    one_line_error(cli("init", "--hospital-id", "h", *portal_args(portal_server), "--home",
                       str(tmp_path / "z"), "--credentials-file", str(bad)), "client_id")
    assert not (tmp_path / "x").exists() and not (tmp_path / "z" / "node.toml").exists()


def test_ingest_status_query_audit(cli, enrolled, pneumonia_npz, dicom_testdata, tmp_path):
    home = str(enrolled)
    r = cli("ingest", "medmnist", str(pneumonia_npz), "--dataset-id", "pneumonia",
            "--partition", "2/3", "--split-scheme", "label-skew", "--seed", "1", "--home", home)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("ingested ")
    r = cli("ingest", "medmnist", str(pneumonia_npz), "--dataset-id", "pneumonia",
            "--partition", "2/3", "--split-scheme", "label-skew", "--seed", "1", "--home", home,
            "--json")
    again = json.loads(r.stdout)
    assert again["ingested"] == 0 and again["already_present"] > 0
    r = cli("ingest", "dicom", str(dicom_testdata), "--dataset-id", "scans", "--home", home)
    assert r.exit_code == 0
    assert "skipped MR_truncated.dcm: truncated pixel data" in r.stdout
    assert "more (use --json for all)" in r.stdout

    r = cli("status", "--home", home, "--json")
    status = json.loads(r.stdout)
    assert {d["dataset_id"] for d in status["datasets"]} == {"pneumonia", "scans"}
    assert status["audit"]["ok"] and status["audit"]["rows"] == 4
    assert status["portal"]["reachable"] is True
    assert status["superlink_reachable"]["reachable"] is False
    assert status["credentials"] == "file"
    r = cli("status", "--home", home)
    assert "chain intact" in r.stdout and "unreachable" in r.stdout

    cohort = tmp_path / "cohort.json"
    cohort.write_text(json.dumps({"modality": ["CR"], "label": [1]}))
    # no consent registry here (no Keycloak): the datasets' regimes decide
    r = cli("query", str(cohort), "--consent-filter", "regime", "--home", home, "--json")
    answer = json.loads(r.stdout)
    ds = {d["dataset_id"]: d for d in answer["datasets"]}
    assert ds["scans"]["subjects"] == "<10" and ds["pneumonia"]["subjects"] % 5 == 0
    r = cli("query", "-", "--consent-filter", "regime", "--home", home,
            input='{"dataset_id": "scans"}')
    assert r.exit_code == 0 and "<10" in r.stdout

    r = cli("publish", "--dry-run", "--home", home)
    assert {d["dataset_id"] for d in json.loads(r.stdout)} == {"pneumonia", "scans"}

    r = cli("audit", "verify", "--home", home, "--json")
    assert json.loads(r.stdout)["ok"] is True
    out = tmp_path / "audit.jsonl"
    r = cli("audit", "export", "--home", home, "--output", str(out))
    actions = [json.loads(line)["action"] for line in out.read_text().splitlines()]
    assert actions == ["node.init", "ingest.medmnist", "ingest.medmnist", "ingest.dicom",
                       "query.cohort", "query.cohort"]


def test_bad_input_gives_one_line_and_non_zero_exit(cli, enrolled, pneumonia_npz, tmp_path):
    home = str(enrolled)
    ingest = ("ingest", "medmnist")
    one_line_error(cli(*ingest, str(tmp_path / "missing.npz"), "--dataset-id", "p",
                       "--home", home), "missing.npz", "does not exist")
    one_line_error(cli(*ingest, str(pneumonia_npz), "--dataset-id", "p", "--partition", "4/3",
                       "--home", home), "4/3")
    one_line_error(cli(*ingest, str(pneumonia_npz), "--dataset-id", "p", "--partition", "x",
                       "--home", home), "i/n")
    one_line_error(cli(*ingest, str(pneumonia_npz), "--dataset-id", "p", "--split-scheme",
                       "random", "--home", home), "unknown split scheme 'random'")
    not_npz = tmp_path / "fake.npz"
    not_npz.write_text("hello")
    one_line_error(cli(*ingest, str(not_npz), "--dataset-id", "p", "--home", home),
                   "fake.npz is not a readable .npz")
    one_line_error(cli(*ingest, str(pneumonia_npz), "--dataset-id", "p", "--consent-regime",
                       "maybe", "--home", home), "consent regime")
    one_line_error(cli("ingest", "dicom", str(tmp_path / "nodir"), "--dataset-id", "d",
                       "--home", home), "does not exist")
    one_line_error(cli("ingest", "table", str(tmp_path / "no.csv"), "--id-column", "id",
                       "--dataset-id", "t", "--home", home), "does not exist")
    one_line_error(cli("ingest", "images", str(tmp_path), "--labels", str(tmp_path / "no.csv"),
                       "--dataset-id", "i", "--home", home), "does not exist")
    one_line_error(cli("status", "--home", str(tmp_path / "nowhere")), "tre node init")
    bad = tmp_path / "cohort.json"
    bad.write_text('{"age_min": 70, "age_max": 20}')
    one_line_error(cli("query", str(bad), "--home", home), "age_min is above age_max")
    bad.write_text('{"colour": "red"}')
    one_line_error(cli("query", str(bad), "--home", home), "colour")
    one_line_error(cli("query", str(tmp_path / "none.json"), "--home", home), "does not exist")
    one_line_error(cli("publish", "--home", home, "--dataset-id", "nope"), "no dataset nope")
    # The ingestion errors above stored nothing.
    r = cli("status", "--home", home, "--json", "--offline")
    assert json.loads(r.stdout)["datasets"] == []


def test_query_refuses_without_consent_state_and_audits_it_once(cli, enrolled, tmp_path):
    """The default filter is the portal's consent registry: with no snapshot the node
    can rely on, nothing is counted, and the refusal is one line and one audit row."""
    table = tmp_path / "t.csv"
    table.write_text("id,age\n" + "".join(f"p{i},{40 + i}\n" for i in range(20)))
    assert cli("ingest", "table", str(table), "--id-column", "id", "--dataset-id", "t",
               "--home", str(enrolled)).exit_code == 0
    r = cli("query", "-", "--home", str(enrolled), input='{"dataset_id": "t"}')
    one_line_error(r, "refused:", "consent snapshot")
    actions = [e.action for e in NodeHome(enrolled).audit.entries()]
    assert actions.count("query.refused") == 1 and "query.cohort" not in actions


def test_consent_regime_is_fixed_by_the_first_ingestion(cli, enrolled, pneumonia_npz):
    home = str(enrolled)
    args = ("ingest", "medmnist", str(pneumonia_npz), "--dataset-id", "p", "--home", home)
    assert cli(*args, "--consent-regime", "opt-in").exit_code == 0
    assert cli(*args).exit_code == 0  # no option: keeps opt-in
    one_line_error(cli(*args, "--consent-regime", "opt-out"), "consent regime opt-in")


def test_publish_without_credentials_fails_before_sending(cli, tmp_path, portal_server,
                                                          pneumonia_npz):
    home = str(tmp_path / "n")
    assert cli("init", "--hospital-id", "h", *portal_args(portal_server),
               "--home", home).exit_code == 0
    cli("ingest", "medmnist", str(pneumonia_npz), "--dataset-id", "p", "--home", home)
    one_line_error(cli("publish", "--home", home), "no service-account credentials")
    actions = [e.action for e in NodeHome(home).audit.entries()]
    assert "catalogue.publish" not in actions


def test_publish_reports_an_unreachable_keycloak(cli, enrolled, pneumonia_npz, monkeypatch):
    home = str(enrolled)
    monkeypatch.setenv("TRE_KEYCLOAK_URL", "http://127.0.0.1:9")
    cli("ingest", "medmnist", str(pneumonia_npz), "--dataset-id", "p", "--home", home)
    one_line_error(cli("publish", "--home", home), "cannot reach http://127.0.0.1:9/realms/tre")


def test_audit_verify_names_a_tampered_row(cli, enrolled, pneumonia_npz):
    home = str(enrolled)
    cli("ingest", "medmnist", str(pneumonia_npz), "--dataset-id", "p", "--partition", "1/9",
        "--home", home)
    node = NodeHome(home)
    with node.db.transaction() as cur:
        cur.execute("UPDATE audit_log SET details = replace(details, '1/9', '2/9') WHERE seq = 2")
    node.db.close()
    one_line_error(cli("audit", "verify", "--home", home), "row 2", "altered")
    r = cli("audit", "verify", "--home", home, "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["first_bad_seq"] == 2


def test_credentials_from_the_environment(cli, enrolled, monkeypatch):
    monkeypatch.setenv("TRE_NODE_CLIENT_ID", "from-env")
    monkeypatch.setenv("TRE_NODE_CLIENT_SECRET", "x")
    assert NodeHome(enrolled).credentials() == {"client_id": "from-env", "client_secret": "x"}
    r = cli("status", "--home", str(enrolled), "--json", "--offline")
    assert json.loads(r.stdout)["credentials"] == "env"


def test_a_store_held_by_another_process_gives_a_clear_error(cli, enrolled):
    import subprocess
    import sys
    import time

    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ok', flush=True);"
         " time.sleep(60)", str(enrolled / "node.duckdb")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        time.sleep(0.2)
        one_line_error(cli("status", "--home", str(enrolled), "--offline"),
                       "cannot open the node store")
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.unit
def test_the_cohort_format_in_help_and_readme_is_the_codes(cli):
    from tre.cli.node_cmd import COHORT_EXAMPLE
    from tre.core.schemas import CohortFilter

    help_text = cli("query", "--help").output
    assert all(field in help_text for field in CohortFilter.model_fields), help_text
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert COHORT_EXAMPLE in readme
    CohortFilter.model_validate_json(COHORT_EXAMPLE)


def test_synthesize_settles_credentials_before_loading_sdv(cli, make_node, tmp_path):
    """A node without credentials learns it at once, not after SDV's long import."""
    import subprocess
    import sys

    home = make_node().path
    table = tmp_path / "t.csv"
    table.write_text("id,age,label\n" + "".join(f"p{i},{40 + i % 30},{i % 2}\n"
                                                 for i in range(40)))
    assert cli("ingest", "table", str(table), "--id-column", "id", "--dataset-id", "t",
               "--home", str(home)).exit_code == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRE_NODE_CLIENT")}
    run = subprocess.run([sys.executable, "-X", "importtime",
                          str(Path(sys.executable).with_name("tre")), "node", "synthesize",
                          "t", "--home", str(home)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode != 0
    imported = [line.split("|")[-1].strip() for line in run.stderr.splitlines()
                if line.startswith("import time:")]
    assert "sdv" not in imported and "sdmetrics" not in imported
    said = [line for line in run.stderr.splitlines() if not line.startswith("import time:")]
    assert len(said) == 1 and said[0].startswith("error:"), said
    assert "credentials" in said[0], said
