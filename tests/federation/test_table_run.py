"""Acceptance: a clinical table trains through the same governed app as images.

SuperLink + 2 SuperNodes on loopback, each node home holding half of scikit-learn's
breast-cancer table ingested through the node's table ingestion; a DP logistic
regression at ε = 4 over real Flower reaches AUC ≥ 0.9 on the nodes' test splits, and
a run naming a variable no node holds is refused at every node, audited, with nothing
read or spent. Two hospitals and two rounds keep it short: CI pays for every process
and every round (`bench/utility.py --table` measures three hospitals).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from access_control.permits import PermitKeyRing
from federation.launch import follow_run
from federation.launch.params import RunParams
from federation.node.home import node_session
from federation.node.ledger import PrivacyLedger

from .helpers import (
    BREAST_LABEL,
    Portal,
    assert_only_disclosed,
    breast_features,
    claims,
    make_home,
    populate_table,
    run_ticket,
)

pytestmark = pytest.mark.integration

HOSPITALS = ["hospital-1", "hospital-2"]
EPSILON = 4.0


@pytest.mark.timeout(600)
def test_breast_cancer_table_trains_and_a_missing_column_is_refused(
        tmp_path: Path, flower_cluster) -> None:  # noqa: ANN001
    portal = Portal()
    ring = PermitKeyRing.load_or_create(tmp_path / "portal-keys.json")
    homes = []
    for i, hospital in enumerate(HOSPITALS):
        home = make_home(tmp_path / "nodes", hospital, ring, portal=portal.url)
        populate_table(home, "wdbc", i, len(HOSPITALS))
        PrivacyLedger(home.db, home.audit, actor="operator").set_budget("wdbc", 10.0)
        home.db.close()
        homes.append(home.path)
    token = ring.sign(claims([(h, "wdbc") for h in HOSPITALS], eps=EPSILON, delta=1e-5))
    params = RunParams(permit=token, model="logreg", features=breast_features(),
                       label=BREAST_LABEL, rounds=2, local_epochs=2, batch_size=32, lr=0.5)
    try:
        for path in homes:
            flower_cluster.start_node(path)
        reports = []
        for run in (params, replace(params, rounds=1, features="mean radius,tumour stage")):
            handle = flower_cluster.start_run(run)
            portal.tickets[handle.run_id] = run_ticket(ring, token, f"flwr-{handle.run_id}")
            try:
                reports.append(follow_run(handle, timeout_s=400))
            except Exception:
                print(flower_cluster.logs())
                raise
    finally:
        portal.close()

    trained, refused = reports
    assert trained["status"] == "completed", trained
    assert_only_disclosed(trained)
    assert trained["rounds"][-1]["evaluate"]["auc"] >= 0.9, trained["rounds"][-1]
    assert max(trained["epsilon_per_node"].values()) <= EPSILON

    assert refused["status"] == "stopped", refused
    (row,) = refused["rounds"]
    assert {n["status"] for n in row["nodes"]} == {"refused"}
    assert all("[missing-column]" in n["reason"] and "'tumour stage'" in n["reason"]
               for n in row["nodes"]), row["nodes"]
    for path in homes:
        with node_session(path) as home:
            entries = home.audit.entries()
            charges = PrivacyLedger(home.db, home.audit, actor="t").charges(dataset_id="wdbc")
        refusals = [e.details for e in entries if e.action == "federation.refused"]
        assert [r["code"] for r in refusals] == ["missing-column"], refusals
        # the refused run read and spent nothing: only the first run's two rounds
        assert [c["round"] for c in charges] == [1, 2]
        # train and evaluate per round, then the membership audit and the calibration
        assert [e.action for e in entries].count("data.read") == 2 + 2 + 1 + 1
