"""Acceptance: a withdrawal between two training runs, with real processes (issue 14).

Real Keycloak, the real portal over HTTP, the real pseudonymisation service, a real
SuperLink and three SuperNodes whose ClientApps use the snapshot consent filter (the
production default). Each hospital holds a share of PneumoniaMNIST and ingests, with
`tre node ingest images`, chest X-rays of three people whose labels file names them
by INS: the node derives their federation pseudonyms through the service and keeps
no identifier. One of them, citizen1, was treated at hospitals A and B. The
data-altruism organisation imports their consents from a FHIR bundle naming them by
INS (`tre consent import`); run 1 uses them; the organisation withdraws by INS
(`tre consent withdraw --identifier`); run 2 excludes them on every node, each
node's audit says so, and the node's feasibility counts drop accordingly (after
disclosure control). Signed in as a citizen, the person sees run 1 (at two
hospitals) and not run 2 among the runs that used their records, as the nodes
reported it; another citizen sees no run. No INS is in any byte of the portal's,
the service's, the nodes' or Flower's state, and the service's key in no other
party's.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from federation.launch.fab import fab_hash
from federation.node.consent import SnapshotConsentFilter
from federation.node.home import NodeHome, node_session
from federation.node.ledger import PrivacyLedger
from federation.node.query import cohort_members, run_query
from federation.node.service import publish
from federation.node.settings import StoredNodeSettings
from federation.training.data import split_pseudonyms
from pseudonymisation.client import PseudonymClient
from pseudonymisation.identifiers import INS_NIR, Identifier
from tests.federation.helpers import NPZ, assert_only_disclosed, label_skew_indices, populate
from tests.fixtures.flower import FlowerCluster
from tests.fixtures.identifiers import assert_absent, consent_bundle, ins_nir
from tests.fixtures.keycloak import CITIZEN_INS
from tests.fixtures.net import free_port
from tests.fixtures.portal import LivePortal, bearer, request_body
from tre.cli.main import app
from tre.core import disclosure
from tre.core.disclosure import DISCLOSURE_KEY_PURPOSE
from tre.core.schemas import CohortFilter, Purpose

pytestmark = pytest.mark.e2e

HOSPITALS = ["hospital-a", "hospital-b", "hospital-c"]
LIMIT = 160  # studies per split and hospital: small, the test is about consent
APP_ID = "tre-train"
CITIZEN = CITIZEN_INS["citizen1"]


def _others(n: int, count: int) -> list[str]:
    """INS of people treated at hospital `n` only."""
    return [ins_nir(f"2{n}0{i:02d}75123{n}{i:02d}") for i in range(count)]


#: The people each hospital ingests by INS and the organisation records consent for:
#: citizen1 at A and B, and others at one hospital each.
PEOPLE = {"hospital-a": [CITIZEN, *_others(0, 2)], "hospital-b": [CITIZEN, *_others(1, 2)],
          "hospital-c": _others(2, 3)}
PER_NODE = 3  # such people per hospital
assert all(len(people) == PER_NODE for people in PEOPLE.values())
IMAGES = 2  # chest X-rays of each at each of their hospitals (a run trains on one)


def _ok(resp: httpx.Response) -> dict:
    assert resp.status_code in (200, 201), resp.text
    return resp.json()


def near(shown: int, exact: int) -> bool:
    """A disclosed count: perturbed by at most 2, then rounded to 5."""
    return shown % 5 == 0 and abs(shown - exact) <= 4


def _consented(home: NodeHome) -> set[str]:
    """The node's subjects whose consent covers AI training (the exact reference)."""
    held = cohort_members(home.db, CohortFilter(dataset_id="pneumonia"))["pneumonia"]
    return set(SnapshotConsentFilter(home).filter(
        dataset_id="pneumonia", purpose=Purpose.AI_TRAINING,
        pseudonyms=sorted(held.subjects)).allowed)


def _feasibility(home: NodeHome) -> tuple[int, object]:
    """Exact and disclosed subject counts of the node's dataset for AI training, the
    disclosed one as the node's own query answers it (through its gate)."""
    answer = run_query(home, CohortFilter(dataset_id="pneumonia"), purpose=Purpose.AI_TRAINING,
                       consent_filter=SnapshotConsentFilter(home))
    return len(_consented(home)), answer["datasets"][0]["subjects"]


def _image_folder(root: Path, index: int, people: list[str]) -> Path:
    """A hospital's export of its chest X-rays of `people`: PNG files and a labels file
    naming each person by INS (training images of the hospital's share that `populate`
    left out). Returns the labels file."""
    data = np.load(NPZ)
    images, labels = data["train_images"], data["train_labels"].reshape(-1)
    spare = label_skew_indices(labels, index, len(HOSPITALS), 7)[LIMIT:]
    root.mkdir(parents=True)
    rows = []
    for p, person in enumerate(people):
        for k in range(IMAGES):
            i = spare[p * IMAGES + k]
            Image.fromarray(images[i]).save(root / f"xr-{p}-{k}.png")
            rows.append({"file": f"xr-{p}-{k}.png", "label": int(labels[i]),
                         "patient_id": person, "split": "train"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


def _tre(*args: str) -> str:
    """A `tre` command as the hospital's operator or the organisation runs it."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.timeout(1500)
def test_withdrawal_between_two_runs_excludes_subjects_on_every_node(
    keycloak, tmp_path, monkeypatch, make_pseudonymiser,
):
    # SuperNodes and their ClientApps find Keycloak through the environment
    monkeypatch.setenv("TRE_KEYCLOAK_URL", keycloak.base_url)
    monkeypatch.setenv("TRE_KEYCLOAK_REALM", keycloak.realm)
    port = free_port()
    service = make_pseudonymiser(tmp_path / "pseudonymiser")
    cluster = FlowerCluster(tmp_path / "flower")
    cluster.root.mkdir()
    try:
        cluster.start_superlink(portal_url=f"http://127.0.0.1:{port}")
        with LivePortal(keycloak, tmp_path / "portal", port=port, superlink=cluster.control,
                        superlink_report_key=cluster.report_key, pseudonymiser_url=service.url,
                        oidc_client_secret=keycloak.portal_client_secret) as portal:
            _withdrawal_between_two_runs(keycloak, portal.url, cluster, tmp_path, service.url)
    finally:
        cluster.stop()
    service.stop()

    # every party stopped: what each one left on disk
    ins_forms = [v.encode() for people in PEOPLE.values() for ins in people
                 for v in (ins, ins[:13])]  # with and without its key
    for party in ("portal", "pseudonymiser", "nodes", "flower"):
        assert_absent(ins_forms, tmp_path / party)
    key = bytes.fromhex((tmp_path / "pseudonymiser" / "oprf.key").read_text().strip())
    for party in ("portal", "nodes", "flower"):
        assert_absent([key, key.hex().encode()], tmp_path / party)


def _withdrawal_between_two_runs(keycloak, url, flower_cluster, tmp_path,  # noqa: ANN001
                                 service_url: str) -> None:
    _ok(httpx.post(f"{url}/v1/apps", headers=bearer(keycloak.token("admin1")), json={
        "app_id": APP_ID, "app_hash": fab_hash(), "description": "DP-SGD image classifier"}))
    jwks = httpx.get(f"{url}/v1/permit-keys").json()

    homes, train_sizes = {}, {}
    for i, hospital in enumerate(HOSPITALS):
        home = NodeHome.create(tmp_path / "nodes" / hospital, StoredNodeSettings(
            hospital_id=hospital, portal_url=url, pseudonymiser_url=service_url,
            keycloak_url=keycloak.base_url, keycloak_realm=keycloak.realm), jwks)
        creds = keycloak.client_credentials(hospital)
        home.save_credentials(creds["client_id"], creds["client_secret"])
        populate(home, "pneumonia", i, 3, limit=LIMIT, regime="opt-out")
        home.close()
        # the hospital's own export of the people it knows by INS, ingested as any is
        labels = _image_folder(tmp_path / "exports" / hospital, i, PEOPLE[hospital])
        ingested = _tre("node", "ingest", "images", str(labels.parent), "--labels",
                        str(labels), "--dataset-id", "pneumonia", "--id-system", INS_NIR,
                        "--home", str(home.path))
        assert f"ingested {PER_NODE * IMAGES} images into pneumonia" in ingested, ingested
        assert "node-local" not in ingested
        with node_session(home.path) as home:
            PrivacyLedger(home.db, home.audit, actor="operator").set_budget("pneumonia", 20.0)
            publish(home, synthetic=False)  # its count bounds the SecAgg+ weights of the runs
            train_sizes[hospital] = len(split_pseudonyms(home.db, "pneumonia", "train"))
        homes[hospital] = home.path

    # what the organisation (or anyone with a token) derives for the people it knows
    subject = dict(zip(
        [ins for people in PEOPLE.values() for ins in people],
        PseudonymClient(service_url, lambda: keycloak.token("steward1")).pseudonyms(
            [Identifier(INS_NIR, ins) for people in PEOPLE.values() for ins in people]),
        strict=True))
    chosen = {h: [subject[ins] for ins in people] for h, people in PEOPLE.items()}
    for hospital in HOSPITALS:  # the nodes hold them under those pseudonyms, split train
        with node_session(homes[hospital]) as home:
            assert set(chosen[hospital]) <= set(split_pseudonyms(home.db, "pneumonia", "train"))

    # the data-altruism organisation holds these people's consent for AI training, by INS
    def steward(*args: str) -> str:
        return _tre(*args, "--portal", url, "--pseudonymiser", service_url, "--insecure",
                    "--token", keycloak.token("steward1"))

    everyone = sorted({ins for people in PEOPLE.values() for ins in people})
    imported = steward("consent", "import",
                       str(consent_bundle(tmp_path / "organisation.json", everyone)))
    assert f"{len(everyone)} created" in imported, imported

    alice = bearer(keycloak.token("alice"))
    req = _ok(httpx.post(f"{url}/v1/requests", headers=alice, json=request_body(
        app_id=APP_ID, epsilon=8.0,
        datasets=[{"node_id": h, "dataset_id": "pneumonia"} for h in HOSPITALS])))
    _ok(httpx.post(f"{url}/v1/requests/{req['id']}/submit", headers=alice))
    decided = _ok(httpx.post(f"{url}/v1/requests/{req['id']}/reviews",
                             headers=bearer(keycloak.token("rev1")),
                             json={"decision": "approve", "rationale": "sound and proportionate"}))
    permit_id = decided["permit_id"]

    feasibility_before = {}
    for hospital in HOSPITALS:
        with node_session(homes[hospital]) as home:
            feasibility_before[hospital] = _feasibility(home)

    for path in homes.values():
        flower_cluster.start_node(path, consent_filter="snapshot")

    started_runs = []

    def run(name: str) -> dict:
        """A run started the way researchers start them: through the portal, which
        submits it to the SuperLink and issues the nodes' run tickets."""
        resp = httpx.post(f"{url}/v1/runs", headers=bearer(keycloak.token("alice")),
                          json={"permit_id": permit_id, "rounds": 1, "batch_size": 64,
                                "lr": 0.5, "epsilon": 2.0}, timeout=60)
        assert resp.status_code == 202, resp.text
        started = resp.json()
        started_runs.append(started["id"])
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            state = _ok(httpx.get(f"{url}/v1/runs/{started['id']}", timeout=30,
                                  headers=bearer(keycloak.token("alice"))))
            if state["state"] not in ("queued", "running"):
                break
            time.sleep(1)
        assert state["state"] == "completed", (name, state, flower_cluster.logs())
        assert_only_disclosed(state)
        return {n["hospital_id"]: n for n in state["rounds"][0]["nodes"]}

    first = run("run-1")
    for hospital in HOSPITALS:
        assert first[hospital]["status"] == "trained"
        # what the researcher sees passed the node's disclosure control: no exact count
        assert first[hospital]["excluded_by_consent"] == "<10"
        # one image per person and round (DP-SGD's unit is the person, not the image)
        assert near(first[hospital]["num_examples"], train_sizes[hospital])

    for ins in everyone:  # the organisation's CLI sends the portal pseudonyms only
        withdrawn = steward("consent", "withdraw", "--identifier", f"{INS_NIR}|{ins}",
                            "--reason", "withdrawn between the two runs")
        assert f"withdrew 1 consent(s) of {subject[ins]}" in withdrawn and ins not in withdrawn

    second = run("run-2")
    for hospital in HOSPITALS:
        assert second[hospital]["excluded_by_consent"] == "<10"
        assert near(second[hospital]["num_examples"], train_sizes[hospital] - PER_NODE)

    # the person's own view: run 1 used their records at A and B, run 2 did not
    mine = _ok(httpx.get(f"{url}/v1/me/runs", headers=bearer(keycloak.token("citizen1")),
                         timeout=30))["items"]
    assert [(r["run_id"], r["hospitals"]) for r in mine] == [(started_runs[0], 2)]
    assert mine[0]["title"] == request_body()["title"]
    assert _ok(httpx.get(f"{url}/v1/me/runs", headers=bearer(keycloak.token("citizen2")),
                         timeout=30))["items"] == []
    receipts = _ok(httpx.get(f"{url}/v1/me/consents", timeout=30,
                             headers=bearer(keycloak.token("citizen1"))))["items"]
    assert [[v["change"] for v in c["history"]] for c in receipts] == [["record", "withdraw"]]

    for hospital in HOSPITALS:
        with node_session(homes[hospital]) as home:
            entries = home.audit.entries()
            assert home.audit.verify().ok
            reads = [e.details for e in entries
                     if e.action == "data.read" and e.details.get("split") == "train"]
            assert [r["excluded_by_consent"] for r in reads] == [0, PER_NODE]
            assert [r["records"] for r in reads] == [train_sizes[hospital],
                                                     train_sizes[hospital] - PER_NODE]
            syncs = [e.details for e in entries if e.action == "consent.sync"]
            assert syncs and syncs[0]["kind"] == "full"
            assert any(s["kind"] == "delta" and s["received"] >= PER_NODE for s in syncs)
            filters = [e.details for e in entries if e.action == "consent.filter"]
            assert filters[-1]["regime"] == "opt-out" and filters[-1]["purpose"] == "ai_training"
            # the node's feasibility answer no longer counts the withdrawn subjects
            exact_before, _ = feasibility_before[hospital]
            exact_after, shown = _feasibility(home)
            assert exact_after == exact_before - PER_NODE
            members = _consented(home)
            key = disclosure.cell_key(disclosure.record_keys(
                home.derive_key(DISCLOSURE_KEY_PURPOSE), members))
            assert shown == disclosure.disclose(exact_after, k=home.config.suppression_k,
                                                key=key)
            assert not set(chosen[hospital]) & members
            reported = [e.details for e in entries if e.action == "run.members"]
            assert reported and not [e for e in entries if e.action == "run.members_failed"]
