"""Secure aggregation (SecAgg+, Flower's own) on real SuperLink and SuperNode processes.

The ServerApp runs with `TRE_SECAGG_TRACE_DIR` set, so it writes what it receives per
node (masked vectors under SecAgg+, plain weights otherwise) and each aggregate: the
tests compare what a curious operator sees with and without SecAgg+.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.common.secure_aggregation.quantization import dequantize
from flwr.common.secure_aggregation.secaggplus_constants import Stage

from access_control.permits import PermitKeyRing
from federation.apps.secagg import FLOWER_MAX_WEIGHT, TRACE_ENV, secagg_parameters
from federation.launch import follow_run
from federation.launch.params import RunParams, secagg_default
from federation.node.ledger import PrivacyLedger
from tests.fixtures.flower import FlowerCluster, stop_process

from .helpers import Portal, assert_only_disclosed, claims, make_home, populate, run_ticket

pytestmark = pytest.mark.integration

HOSPITALS = ["hospital-1", "hospital-2", "hospital-3"]
CAP = 2.0
LIMIT = 150  # images per split and node: enough for k=10 and the membership audit
BOUND = 100  # a SecAgg+ weight bound below each node's training examples


def _homes(root: Path, hospitals: list[str], ring: PermitKeyRing, portal: Portal,
           count: int) -> list[Path]:
    homes = []
    for i, hospital in enumerate(hospitals):
        home = make_home(root, hospital, ring, portal=portal.url)
        populate(home, "pneumonia", i, count, limit=LIMIT)
        PrivacyLedger(home.db, home.audit, actor="operator").set_budget("pneumonia", 10.0)
        home.db.close()
        homes.append(home.path)
    return homes


def _cluster(root: Path, trace: Path) -> FlowerCluster:
    """A SuperLink whose ServerApps write their trace under `trace`."""
    previous = os.environ.get(TRACE_ENV)
    os.environ[TRACE_ENV] = str(trace)
    try:
        cluster = FlowerCluster(root)
        cluster.start_superlink()
    finally:
        if previous is None:
            os.environ.pop(TRACE_ENV)
        else:
            os.environ[TRACE_ENV] = previous
    return cluster


class Setup:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.trace = root / "trace"
        self.portal = Portal()
        self.ring = PermitKeyRing.load_or_create(root / "portal-keys.json")
        self.cluster = _cluster(root / "flower", self.trace)

    def run(self, params: RunParams, token: str, **follow: object) -> tuple[dict, int]:
        handle = self.cluster.start_run(params)
        self.portal.tickets[handle.run_id] = run_ticket(self.ring, token,
                                                        f"flwr-{handle.run_id}")
        try:
            report = follow_run(handle, timeout_s=600, **follow)  # type: ignore[arg-type]
        except Exception:
            print(self.cluster.logs())
            raise
        return report, handle.run_id

    def close(self) -> None:
        self.cluster.stop()
        self.portal.close()


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """Three hospitals' SuperNodes on one SuperLink, shared by the tests below."""
    setup = Setup(tmp_path_factory.mktemp("secagg3"))
    try:
        setup.cluster.root.mkdir(exist_ok=True)
        homes = _homes(setup.root / "nodes", HOSPITALS, setup.ring, setup.portal, 3)
        for path in homes:
            setup.cluster.start_node(path)
        yield setup
    finally:
        setup.close()


def _load(path: Path) -> list[np.ndarray]:
    with np.load(path) as z:
        return [z[k] for k in z.files]


def _load_named(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_default_is_on_from_three_hospitals() -> None:
    assert [secagg_default(n) for n in (1, 2, 3, 4)] == [False, False, True, True]
    assert RunParams().resolved(3).secagg is True
    assert RunParams(secagg=False).resolved(5).secagg is False
    assert "secagg" not in RunParams().to_run_config()
    assert secagg_parameters(3) == (3, 2) and secagg_parameters(4) == (4, 3)


@pytest.mark.timeout(900)
def test_masked_updates_and_same_aggregate(three: Setup) -> None:
    """SecAgg+ on: the server receives masked vectors unlike each node's update, and
    the aggregate equals plain FedAvg of the same updates (same seeds, secagg off).

    The SecAgg+ run's weight bound is below every node's ~150 training examples (as
    for data ingested after the catalogue entry it was derived from): each node sends
    the bound as its weight and says so, and nothing is scaled past Flower's range."""
    # a permit per run: each caps its own ε
    first, second = (three.ring.sign(claims([(h, "pneumonia") for h in HOSPITALS], eps=CAP))
                     for _ in range(2))
    common = {"rounds": 1, "batch_size": 64, "lr": 0.5, "seed": 3}
    # no secagg given: three hospitals turn it on (launch.start_run resolves it)
    masked_report, masked_run = three.run(
        RunParams(permit=first, secagg_max_weight=BOUND, **common), first)
    plain_report, plain_run = three.run(RunParams(permit=second, **common, secagg=False),
                                        second)

    for report in (masked_report, plain_report):
        assert report["status"] == "completed", (report.get("stop_reason"), report["rounds"])
    assert masked_report["secure_aggregation"] is True
    assert masked_report["secagg"] == {"num_shares": 3, "reconstruction_threshold": 2,
                                       "max_weight": BOUND}
    assert plain_report["secure_aggregation"] is False and plain_report["secagg"] is None
    for report in (masked_report, plain_report):
        assert_only_disclosed(report)
        nodes = report["rounds"][0]["nodes"]
        assert sorted(n["hospital_id"] for n in nodes) == HOSPITALS
        assert {n["status"] for n in nodes} == {"trained"}
        assert all(0 < n["epsilon"] <= CAP and n["num_examples"] > 0 for n in nodes)
        assert sorted(report["epsilon_per_node"]) == HOSPITALS
        assert sorted(a["hospital_id"] for a in report["privacy_audits"]) == HOSPITALS
    # the same disclosed counts and ε under both; under SecAgg+ each weight was capped
    rows = {r: {n["hospital_id"]: (n["num_examples"], n["epsilon"])
                for n in rep["rounds"][0]["nodes"]}
            for r, rep in (("m", masked_report), ("p", plain_report))}
    assert rows["m"] == rows["p"]
    assert all(n["num_examples"] > BOUND for n in plain_report["rounds"][0]["nodes"])
    assert [n.get("weight_capped_at") for n in masked_report["rounds"][0]["nodes"]] == \
        [BOUND] * 3
    assert not any("weight_capped_at" in n for n in plain_report["rounds"][0]["nodes"])
    # each node said so in its log, where Flower's mod (same process, same logger) warns
    # of a weight past max_weight: it never did
    logs = "".join(p.read_text() for p in three.cluster.root.glob("supernode-*.log"))
    capped = [line for line in logs.splitlines()
              if f"above the SecAgg+ weight bound {BOUND}" in line]
    assert {h for h in HOSPITALS if any(f"] {h}: " in line for line in capped)} == \
        set(HOSPITALS), capped
    assert "Potential overflow warning" not in logs

    masked_dir, plain_dir = three.trace / str(masked_run), three.trace / str(plain_run)
    node_ids = sorted(int(p.stem.rsplit("-", 1)[1]) for p in plain_dir.glob("round-1-plain-*"))
    assert len(node_ids) == 3
    assert not list(masked_dir.glob("round-1-plain-*"))  # no plain update reached it
    weights = {n["node_id"]: min(n["num_examples"], BOUND)
               for n in plain_report["rounds"][0]["nodes"]}
    for nid in node_ids:
        own = _load_named(plain_dir / f"round-1-plain-{nid}.npz")
        masked = _load(masked_dir / f"round-1-masked-{nid}.npz")
        factor, vectors = masked[0], masked[1:]
        assert [v.shape for v in vectors] == [a.shape for a in own.values()]
        # read as if unmasked, a node's vector is noise: nowhere near its weighted update
        ratio = weights[nid] / BOUND
        seen = dequantize([v % 2**32 for v in vectors], 8.0, 2**22)
        gap = np.mean(np.abs(np.concatenate([(s - ratio * o).ravel() for s, o in
                                             zip(seen, own.values(), strict=True)])))
        assert gap > 100, gap  # masks are uniform mod 2^32, updates are below 1 here
        assert int(factor[0]) != round(ratio * 2**22)  # even the weight is masked

    # the aggregate: SecAgg+'s equals FedAvg of the same updates weighted as sent (each
    # capped at the bound), the plain one FedAvg weighted by the examples themselves
    secure = _load_named(masked_dir / "round-1-aggregate.npz")
    plain = _load_named(plain_dir / "round-1-aggregate.npz")
    examples = {n["node_id"]: n["num_examples"] for n in plain_report["rounds"][0]["nodes"]}
    for name, value in secure.items():
        updates = {nid: _load_named(plain_dir / f"round-1-plain-{nid}.npz")[name]
                   for nid in node_ids}
        fedavg = sum(examples[n] * updates[n] for n in node_ids) / sum(examples.values())
        capped = sum(weights[n] * updates[n] for n in node_ids) / sum(weights.values())
        np.testing.assert_allclose(plain[name], fedavg, atol=1e-5)
        np.testing.assert_allclose(value, capped, atol=1e-4)


@pytest.mark.timeout(900)
def test_refusal_still_holds_under_secagg(three: Setup) -> None:
    """A node outside the permit refuses at SecAgg+'s collect stage, named, with its
    reason; the others (at the threshold) still aggregate."""
    named = ["hospital-1", "hospital-2", "hospital-9"]  # hospital-3 is not in the permit
    token = three.ring.sign(claims([(h, "pneumonia") for h in named], eps=CAP))
    report, _ = three.run(RunParams(permit=token, rounds=1, batch_size=64, min_nodes=2,
                                    secagg=True), token)
    assert report["status"] == "completed", report
    assert report["secure_aggregation"] is True
    nodes = {n.get("hospital_id") or n["reason"].split()[0]: n
             for n in report["rounds"][0]["nodes"]}
    assert {h: n["status"] for h, n in nodes.items()} == {
        "hospital-1": "trained", "hospital-2": "trained", "hospital-3": "refused"}
    assert nodes["hospital-3"]["reason"].startswith("hospital-3 refused: [")
    assert sorted(report["epsilon_per_node"]) == ["hospital-1", "hospital-2"]


@pytest.mark.timeout(900)
def test_node_dropping_at_threshold_completes(tmp_path: Path) -> None:
    """Four nodes (threshold 3): one stops after sharing its keys, before sending its
    masked vector; the three others' shares unmask the sum and the round completes."""
    hospitals = [*HOSPITALS, "hospital-4"]
    setup = Setup(tmp_path)
    try:
        homes = _homes(tmp_path / "nodes", hospitals, setup.ring, setup.portal, 4)
        procs = [setup.cluster.start_node(path) for path in homes]
        token = setup.ring.sign(claims([(h, "pneumonia") for h in hospitals], eps=CAP))
        stopped = threading.Event()

        def drop_at_collect() -> None:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and not stopped.is_set():
                if list(setup.trace.glob(f"*/round-1-{Stage.COLLECT_MASKED_VECTORS}.started")):
                    stop_process(procs[3])
                    stopped.set()
                    return
                time.sleep(0.05)

        watcher = threading.Thread(target=drop_at_collect, daemon=True)
        watcher.start()
        report, _ = setup.run(RunParams(permit=token, rounds=1, batch_size=64, min_nodes=3,
                                        round_timeout=120),
                              token)
        stopped.set()
    finally:
        setup.close()
    assert report["status"] == "completed", report
    # no bound derived (submitted around the portal): Flower's default
    assert report["secagg"] == {"num_shares": 4, "reconstruction_threshold": 3,
                                "max_weight": FLOWER_MAX_WEIGHT}
    statuses = sorted(n["status"] for n in report["rounds"][0]["nodes"])
    assert statuses == ["no-reply", "trained", "trained", "trained"], report["rounds"]
    assert sorted(report["epsilon_per_node"]) == HOSPITALS
    assert report["rounds"][0]["evaluate"]["num-examples"] > 0
