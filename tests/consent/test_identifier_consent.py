"""Acceptance (issue 14): consent by a person's identifier reaches every hospital.

Real Keycloak, the real portal over HTTPS, the real pseudonymisation service (its own
process and home) and three node homes. One person, identified by an INS, has
records at hospitals A and B (their clinical tables carry the INS); hospital C has
none. The data-altruism organisation imports a FHIR Consent whose patient carries
that INS (`tre consent import`): A and B both include the person in an opt-in
dataset. The organisation then withdraws by INS (`tre consent withdraw`): the next
consent decision at A and B excludes them, counted in each node's audit. The INS
appears in no byte of the portal's or the service's state, and the service's key in
no byte of any other party's.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from federation.node.consent import SnapshotConsentFilter
from federation.node.home import node_session
from federation.node.ingest import ingest_table
from federation.node.service import init_node
from federation.provision import provision
from pseudonymisation.identifiers import INS_NIR, Identifier
from tests.fixtures.identifiers import assert_absent, consent_bundle, ins_nir
from tests.fixtures.portal import LivePortal
from tre.cli.main import app
from tre.core.schemas import Purpose

pytestmark = pytest.mark.e2e

HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")
DATASET = "cohort"
OTHERS = 12  # other people per hospital (their INS differ at every hospital)


def _table(path: Path, people: list[str]) -> Path:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["ins", "age", "hba1c"])
        for i, ins in enumerate(people):
            out.writerow([ins, 40 + i, 5.0 + i / 10])
    return path


def _decision(home_path: Path, subject: str) -> tuple[bool, dict]:
    """Whether the node's consent filter lets `subject` into a run for AI training,
    and the audit row of that decision."""
    with node_session(home_path) as home:
        decision = SnapshotConsentFilter(home).filter_dataset(DATASET, Purpose.AI_TRAINING)
        row = [e for e in home.audit.entries() if e.action == "consent.filter"][-1]
        assert home.audit.verify().ok
    return subject in decision.allowed, row.details


@pytest.mark.timeout(600)
def test_consent_and_withdrawal_by_ins_reach_both_hospitals(keycloak, tmp_path,
                                                             make_pseudonymiser):
    pki = provision(tmp_path / "pki", [])
    person = ins_nir("1850375123456")  # one person, treated at A and at B
    service = make_pseudonymiser(tmp_path / "pseudonymiser")
    with LivePortal(keycloak, tmp_path / "portal", tls=pki) as portal:
        homes = {}
        for n, hospital in enumerate(HOSPITALS):
            creds = tmp_path / f"{hospital}-creds.json"
            creds.write_text(json.dumps(keycloak.client_credentials(hospital)))
            home = init_node(tmp_path / "nodes" / hospital, hospital_id=hospital,
                             portal_url=portal.url, portal_ca=pki.ca_cert,
                             keycloak_url=keycloak.base_url, credentials_file=creds,
                             pseudonymiser_url=service.url, insecure=True)
            home.close()
            others = [ins_nir(f"2{n}0{i:02d}75123{n}{i:02d}") for i in range(OTHERS)]
            people = [*others, person] if hospital != "hospital-c" else others
            with node_session(home.path) as h:
                report = ingest_table(h, _table(tmp_path / f"{hospital}.csv", people),
                                      id_column="ins", id_system=INS_NIR, dataset_id=DATASET,
                                      consent_regime="opt-in")
            assert report.ingested == len(people) and report.pseudonyms == "federation"
            homes[hospital] = home.path

        # the person's pseudonym as anyone with a steward's or a node's token derives it
        subject = service.client(lambda: keycloak.token("steward1")
                                 ).pseudonyms([Identifier(INS_NIR, person)])[0]

        steward = ["--portal", portal.url, "--pseudonymiser", service.url, "--ca",
                   str(pki.ca_cert), "--insecure", "--token", keycloak.token("steward1")]
        runner = CliRunner()
        bundle = consent_bundle(tmp_path / "org.json", [person])
        imported = runner.invoke(app, ["consent", "import", str(bundle), *steward])
        assert imported.exit_code == 0, imported.output
        assert "1 created" in imported.output

        before = {h: _decision(homes[h], subject) for h in HOSPITALS}
        for hospital in ("hospital-a", "hospital-b"):
            included, audit = before[hospital]
            assert included, hospital
            assert audit["allowed"] == 1 and audit["excluded"] == OTHERS
        assert not before["hospital-c"][0]

        withdrawn = runner.invoke(app, ["consent", "withdraw", "--identifier",
                                        f"{INS_NIR}|{person}", "--reason", "asked by phone",
                                        *steward])
        assert withdrawn.exit_code == 0, withdrawn.output
        assert subject in withdrawn.output and person not in withdrawn.output

        for hospital in ("hospital-a", "hospital-b"):
            included, audit = _decision(homes[hospital], subject)
            assert not included, hospital
            assert audit["allowed"] == 0 and audit["excluded"] == OTHERS + 1

        # malformed or unknown identifiers: a one-line error, nothing sent or stored
        for bad, why in ((f"{INS_NIR}|1850375123457", "key"),
                         ("urn:oid:9.9|123", "unknown identifier system"), ("no-bar", "|")):
            refused = runner.invoke(app, ["consent", "withdraw", "--identifier", bad,
                                          *steward])
            assert refused.exit_code != 0 and why in refused.output, refused.output

    service.stop()
    key = bytes.fromhex((tmp_path / "pseudonymiser" / "oprf.key").read_text().strip())
    # every party stopped: what each one left on disk
    ins_forms = [person.encode(), person[:13].encode()]  # with and without its key
    assert_absent(ins_forms, tmp_path / "portal")
    assert_absent(ins_forms, tmp_path / "pseudonymiser")
    for party in (tmp_path / "portal", *homes.values()):
        assert_absent([key, key.hex().encode()], party)
