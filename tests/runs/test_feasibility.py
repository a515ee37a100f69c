"""Acceptance: feasibility counts from the portal, through a real Flower query run.

Real Keycloak, the portal over HTTP, a SuperLink and three enrolled SuperNodes on
real DuckDB homes. hospital-c holds so few records that its cells are suppressed:
the portal keeps them suppressed and its total never reveals them.
"""

from __future__ import annotations

import json

import httpx
import pytest

from federation import launch
from federation.launch.control import ControlAPI
from federation.launch.fab import FEASIBILITY_FAB_DIR
from federation.launch.report import CREDENTIAL_KEY
from federation.node.home import node_session
from federation.node.serve import start_supernode
from tests.fixtures.flower import free_port, stop_process
from tre.core import disclosure

from .conftest import HOSPITALS, refused_at_the_superlink, wait_for

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
def test_feasibility_counts_per_hospital_with_suppression(federation) -> None:
    fed = federation
    for i, (hospital, limit) in enumerate(zip(HOSPITALS, (60, 60, 2), strict=True)):
        fed.add_home(hospital, limit=limit, index=i)
    for hospital in HOSPITALS:
        fed.start_node(hospital)
    resp = httpx.post(f"{fed.portal.url}/v1/feasibility", headers=fed.headers("alice"),
                      json={"cohort": {"dataset_id": "pneumonia", "modality": ["XR"]}},
                      timeout=400)
    assert resp.status_code == 200, (resp.text, fed.cluster.logs())
    out = resp.json()
    rows = {r["hospital_id"]: r for r in out["hospitals"]}
    assert sorted(rows) == HOSPITALS
    assert all(r["status"] == "answered" for r in rows.values()), (rows, fed.cluster.logs())
    subjects = {h: rows[h]["datasets"][0]["subjects"] for h in HOSPITALS}
    # a and b hold 3 x 60 studies each: shown, rounded to 5; c holds 3 x 2: suppressed
    for h in ("hospital-a", "hospital-b"):
        assert isinstance(subjects[h], int) and subjects[h] % 5 == 0 and subjects[h] >= 150
    assert subjects["hospital-c"] == "<10"
    for cell in rows["hospital-c"]["datasets"][0]["by_label"].values():
        assert cell == "<10"
    total = out["total_subjects"]["pneumonia"]
    assert total == disclosure.combine(list(subjects.values()))
    assert total.startswith(">=")  # never a number that would give hospital-c away
    # audited at the portal and at every node; no training data was read anywhere
    audit = httpx.get(f"{fed.portal.url}/v1/audit?limit=1000",
                      headers=fed.headers("auditor1"), timeout=30)
    assert audit.status_code == 200, audit.text
    portal_actions = {e["action"] for e in audit.json()["entries"]}
    assert {"node.enrol", "feasibility.run", "feasibility.result"} <= portal_actions
    for hospital in HOSPITALS:
        actions = fed.audit_actions(hospital)
        assert "query.feasibility" in actions and "consent.filter" in actions
        assert "data.read" not in actions
    # every node pinned its audit head at the portal as it answered
    held = {c["party"]: c for c in httpx.get(f"{fed.portal.url}/v1/audit/checkpoints").json()}
    for hospital in HOSPITALS:
        with node_session(fed.homes[hospital]) as home:
            assert (held[hospital]["seq"], held[hospital]["hash"]) == home.audit.head()

    # Whoever reaches the SuperLink but goes around the portal gets no count.
    # (a) A query of one's own carries no results credential of the portal's: the
    #     SuperLink's runtime refuses it before any hospital hears of it.
    settings = fed.portal.settings
    mapping = {hospital: fed.node_ids[hospital] for hospital in HOSPITALS}
    tls = {"insecure": settings.superlink_insecure,
           "root_certificates": settings.superlink_root_certificates}
    own = launch.submit_app(settings.superlink, FEASIBILITY_FAB_DIR, {
        "cohort": json.dumps({"dataset_id": "pneumonia", "modality": ["XR"]}),
        "purpose": "scientific_research", "node-map": json.dumps(mapping), "timeout": 120},
        fed.root / "own-query", credential=None, **tls)
    refused_at_the_superlink(fed, own)
    # (b) The portal's own query replayed whole, as a hospital reads its run config from
    #     its SuperNode (ticket and sealed credential included): every node refuses the
    #     used ticket, and the portal takes no second report for that credential.
    replayed = _run_config(settings, out["flower_run_id"])
    sealed = replayed.pop(CREDENTIAL_KEY)
    copy = launch.submit_app(settings.superlink, FEASIBILITY_FAB_DIR, replayed,
                             fed.root / "replayed", credential=sealed, **tls)
    wait_for(lambda: (lambda s: s if s and s.startswith("finished") else None)(
        launch.run_status(copy)), 300, "the replayed query never ended")
    for hospital in HOSPITALS:
        with node_session(fed.homes[hospital]) as home:
            refusals = [e.details for e in home.audit.entries()
                        if e.action == "query.refused" and e.object_id == f"flwr-{copy.run_id}"]
        assert [r["code"] for r in refusals] == ["ticket-used"], (hospital, refusals)
    assert "reports for Flower run" in fed.cluster.logs()
    entries = httpx.get(f"{fed.portal.url}/v1/audit?limit=1000", headers=fed.headers(
        "auditor1"), timeout=30).json()["entries"]
    reports = [e for e in entries if e["action"] == "run.results"]
    assert [e["details"]["flower_run_id"] for e in reports] == [out["flower_run_id"]]


def _run_config(settings, flower_run_id: int) -> dict:  # noqa: ANN001
    """A run's configuration as the Control API gives it (and a SuperNode sees it)."""
    from flwr.common.serde import run_from_proto
    from flwr.proto.control_pb2 import ListRunsRequest

    control = ControlAPI(settings.superlink, settings.superlink_insecure,
                         settings.superlink_root_certificates)
    with control._client("reading a run") as client:
        res = client.ListRuns(ListRunsRequest(run_id=flower_run_id))
    return dict(run_from_proto(next(iter(res.run_dict.values()))).override_config)


@pytest.mark.timeout(120)
def test_feasibility_needs_researcher_and_a_published_dataset(federation) -> None:
    url = f"{federation.portal.url}/v1/feasibility"
    body = {"cohort": {"dataset_id": "nothing-here"}}
    assert httpx.post(url, json=body, headers=federation.headers("steward1")).status_code == 403
    resp = httpx.post(url, json=body, headers=federation.headers("alice"))
    assert resp.status_code == 409 and "no hospital published" in resp.json()["detail"]
    resp = httpx.post(url, json={"cohort": {"age_min": 80, "age_max": 10}},
                      headers=federation.headers("alice"))
    assert resp.status_code == 422


@pytest.mark.timeout(400)
def test_unregistered_supernode_is_refused_on_the_secure_path(federation) -> None:
    """A SuperNode whose key was never enrolled cannot join the TLS + auth SuperLink."""
    fed = federation
    fed.add_home("hospital-c", limit=2, index=2, enrol_node=False)
    port = free_port()
    home = fed.homes["hospital-c"]
    log = fed.cluster.root / "supernode-unregistered.log"
    proc = start_supernode(home, fed.cluster.superlink, port=port, consent_filter="regime",
                           node_key=home / "flower-node-key", insecure=False,
                           root_certificates=fed.tls["root_certificates"], log_path=log)
    try:
        rc = proc.wait(timeout=300)
    finally:
        stop_process(proc)
    assert rc != 0
    assert "Failed to activate SuperNode" in log.read_text()
    nodes = httpx.get(f"{fed.portal.url}/v1/nodes", headers=fed.headers("auditor1")).json()
    assert "hospital-c" not in {n["hospital_id"] for n in nodes}
