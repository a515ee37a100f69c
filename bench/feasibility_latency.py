"""Feasibility latency: a cohort count through the portal, the SuperLink and three
hospital nodes, against the same count as a local DuckDB query at one node.

The federated path is the real one the demo uses (Keycloak, the portal over HTTP
issuing a signed ticket, the SuperLink with TLS and its Fleet gateway, three node
runtimes with SuperNode authentication, consent pulled and disclosure control at
each node); the first query is a warm-up and is reported apart. The baseline is the
cohort count on one node's store (`cohort_members`), in this process.

Writes bench/results/feasibility_latency.json (key `federated_s`: median seconds of
a warm federated count; aim ≤ 3 s).

    python bench/feasibility_latency.py [--queries 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    from federation.node.home import NodeHome
    from federation.node.query import cohort_members
    from tre.cli.demo_cmd import HOSPITALS, IMAGING, Demo
    from tre.core.schemas import CohortFilter

    cohort = {"cohort": {"dataset_id": IMAGING, "label": [1]}, "purpose": "ai_training"}
    demo = Demo(Path(tempfile.mkdtemp(prefix="tre-feasibility-")), rounds=1)
    federated: list[float] = []
    try:
        def publish() -> str:
            for hospital in HOSPITALS:
                demo.tre("node", "publish", "--home", str(demo.home(hospital)))
            return "dataset descriptors published"

        for name, stage in (("pki", demo.provision), ("keycloak", demo.keycloak),
                            ("pseudonymiser", demo.pseudonymiser), ("superlink", demo.superlink_),
                            ("portal", demo.portal), ("nodes", demo.nodes),
                            ("publish", publish), ("supernodes", demo.serve_nodes)):
            demo.stage(name, stage)
        for _ in range(args.queries + 1):
            started = time.perf_counter()
            answer = demo.api("POST", "/v1/feasibility", "alice", json=cohort, timeout=900)
            federated.append(time.perf_counter() - started)
            answered = [h for h in answer["hospitals"] if h["status"] == "answered"]
            if len(answered) != len(HOSPITALS):
                raise RuntimeError(f"not every hospital answered: {answer['hospitals']}")
    finally:
        demo.stop()
    home = NodeHome(demo.home(HOSPITALS[0]))
    local = []
    for _ in range(args.queries):
        started = time.perf_counter()
        cohort_members(home.db, CohortFilter(dataset_id=IMAGING, label=[1]))
        local.append(time.perf_counter() - started)
    home.db.close()
    warm = statistics.median(federated[1:])
    out = {"queries": args.queries, "first_query_s": federated[0], "federated_runs_s": federated,
           "federated_s": warm, "local_duckdb_s": statistics.median(local),
           "ratio_federated_to_local": warm / statistics.median(local), "aim_federated_s": 3.0,
           "hospitals": len(HOSPITALS)}
    print(json.dumps(out, indent=1))
    if not args.no_write:
        print("wrote", write_result("feasibility_latency", out))


if __name__ == "__main__":
    main()
