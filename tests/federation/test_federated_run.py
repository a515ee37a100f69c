"""Acceptance: a governed federated DP run on real Flower processes.

SuperLink + 3 SuperNodes on loopback, each node home holding a label-skewed
partition i/3 of the real PneumoniaMNIST file; 2 rounds of the small GroupNorm
CNN submitted through the Control API as the portal submits runs; the results come
back over the portal's API (here the real portal app serving only that).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from access_control.permits import PermitKeyRing
from federation.launch import RunError, follow_run, submit_app
from federation.launch.fab import FAB_DIR
from federation.launch.params import RunParams
from federation.node.home import node_session
from federation.node.ledger import PrivacyLedger
from federation.training.evaluation import THRESHOLDS

from .helpers import Portal, assert_only_disclosed, claims, make_home, populate, run_ticket

pytestmark = pytest.mark.integration

HOSPITALS = ["hospital-1", "hospital-2", "hospital-3"]
CAP = 3.0


@pytest.mark.timeout(900)
def test_three_hospitals_two_rounds(tmp_path: Path, flower_cluster) -> None:  # noqa: ANN001
    portal = Portal()
    ring = PermitKeyRing.load_or_create(tmp_path / "portal-keys.json")
    homes = []
    for i, hospital in enumerate(HOSPITALS):
        home = make_home(tmp_path / "nodes", hospital, ring, portal=portal.url)
        populate(home, "pneumonia", i, 3)
        PrivacyLedger(home.db, home.audit, actor="operator").set_budget("pneumonia", 10.0)
        home.db.close()
        homes.append(home.path)
    permit = claims([(h, "pneumonia") for h in HOSPITALS], eps=CAP, delta=1e-5)
    token = ring.sign(permit)
    try:
        for path in homes:
            flower_cluster.start_node(path)
        handle = flower_cluster.start_run(
            RunParams(permit=token, rounds=2, batch_size=128, lr=0.5))
        # what the portal does for the runs it submits: a ticket for this Flower run
        portal.tickets[handle.run_id] = run_ticket(ring, token, f"flwr-{handle.run_id}")
        events: list[dict] = []
        try:
            report = follow_run(handle, events.append, timeout_s=800)
        except Exception:
            print(flower_cluster.logs())
            raise
    finally:
        portal.close()

    # A run config naming a results path is not taken: the approved app has no such key,
    # so the SuperLink refuses the run, and nothing is written there.
    elsewhere = tmp_path / "elsewhere"
    sealed, _ = flower_cluster.results_portal.record("run")
    with pytest.raises(RunError, match="Invalid run configuration"):
        submit_app(flower_cluster.control, FAB_DIR, {"permit": token,
                   "results-dir": str(elsewhere)}, elsewhere, credential=sealed)
    assert not elsewhere.exists()

    assert report["status"] == "completed", report
    assert [e["event"] for e in events][0] == "start" and events[-1]["event"] == "end"
    assert len(report["rounds"]) == 2
    results = handle.results_dir  # in the portal's own state, sent over its API
    assert (results / "report.json").exists() and (results / "report.png").exists()
    assert (results / "model.pt").exists()
    assert json.loads((results / "report.json").read_text())["permit"]["permit_id"] == \
        permit.permit_id
    final = report["epsilon_per_node"]
    assert sorted(final) == HOSPITALS
    assert_only_disclosed(report)
    for rnd in report["rounds"]:
        assert {n["status"] for n in rnd["nodes"]} == {"trained"}
        assert rnd["evaluate"]["num-examples"] > 0
        assert 0.0 <= rnd["evaluate"]["auc"] <= 1.0
        assert 0.0 < rnd["evaluate"]["auc-se"] < 0.1  # for the model card's AUC interval
        for n in rnd["nodes"]:
            assert 0 < n["epsilon"] <= CAP
    # Each node audited the final model for membership inference; only figures came back.
    audits = {a["hospital_id"]: a for a in report["privacy_audits"]}
    assert sorted(audits) == HOSPITALS
    for audit in audits.values():
        assert -1.0 <= audit["mia_advantage"] <= 1.0 and audit["records"] >= 20
        assert set(audit) == {"node_id", "hospital_id", "mia_advantage", "mia_ci_low",
                              "mia_ci_high", "mia_chance_advantage", "mia_chance_p95",
                              "mia_p_value", "mia_attack", "records"}
        assert 0 <= audit["mia_ci_low"] <= audit["mia_ci_high"] <= 1
        assert 0 < audit["mia_chance_advantage"] < 1 and 0 < audit["mia_p_value"] <= 1
        assert audit["mia_attack"] in ("loss", "confidence")
    # The decision threshold, picked on the nodes' val splits pooled, and the accuracy
    # at it on their test splits pooled: statistics only (assert_only_disclosed above).
    calibrated = report["decision_threshold"]
    assert calibrated["threshold"] in THRESHOLDS and calibrated["errors"] == []
    assert 0.5 < calibrated["accuracy"] <= 1 and 0.5 < calibrated["balanced_accuracy"] <= 1
    # The ledger at each node holds exactly what the run reported, round by round.
    for hospital, path in zip(HOSPITALS, homes, strict=True):
        reported = [next(n["epsilon"] for n in r["nodes"] if n["hospital_id"] == hospital)
                    for r in report["rounds"]]
        with node_session(path) as home:
            ledger = PrivacyLedger(home.db, home.audit, actor="t")
            charges = ledger.charges(dataset_id="pneumonia")
            actions = [e.action for e in home.audit.entries()]
            assert home.audit.verify().ok
            status = ledger.status("pneumonia")
        assert [c["round"] for c in charges] == [1, 2]
        assert [c["epsilon_run"] for c in charges] == pytest.approx(reported)
        assert max(c["epsilon_run"] for c in charges) <= CAP
        # train + evaluate for two rounds, one calibration, one audit
        assert actions.count("data.read") == 6
        assert "privacy.release" in actions
        assert status.active_runs == 0
        assert status.epsilon_spent == pytest.approx(reported[-1])
