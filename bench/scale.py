"""Seconds per round against the number of hospitals, on Flower's simulation engine.

`python -m bench.scale [--hospitals 10 50 100] [--rounds 3]` runs the governed
training app (the node-installed ServerApp and the same train/evaluate tasks,
permit check, regime consent filter and ε ledger at every virtual node) with N
virtual hospitals, each a real node home on DuckDB holding a small partition of
PneumoniaMNIST, and reports seconds per round (train + evaluate, from the run
report; rounds after the first, since round 1 also starts the simulation's worker
processes, reported apart) and the ratio to the smallest N (aim: per-round time
grows no worse than linearly). It stops with an error unless every hospital trained
in every round.

The simulation engine needs Ray, which the project's `bench` extra installs
(`flwr[simulation]`; `scripts/ensure-venv` includes it). Where Ray is missing the
benchmark writes `bench/results/scale.json` with status "blocked" and exits 2: it
does not fall back to something else and call it the same measurement.

Simulation differs from a deployment in one governed step: there is no installed
FAB to hash, so the virtual nodes are told the permit's app hash (`app_hash` of the
NodeContext); every other check runs as on a real node.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import write_result


def _blocked(reason: str) -> int:
    path = write_result("scale", {"status": "blocked", "reason": reason, "figures": None})
    print(f"scale benchmark blocked: {reason} (wrote {path})", file=sys.stderr)
    return 2


def _prepare(root: Path, n: int, per_split: int) -> tuple[list[Path], str]:
    """N node homes with partitions i/N and a permit naming them all."""
    from access_control.permits import PermitKeyRing
    from federation.node.ledger import PrivacyLedger
    from tests.federation.helpers import claims, make_home, populate

    ring = PermitKeyRing.load_or_create(root / "keys.json")
    homes = []
    hospitals = [f"hospital-{i:03d}" for i in range(n)]
    for i, h in enumerate(hospitals):
        home = make_home(root / "nodes", h, ring)
        populate(home, "pneumonia", i, n, limit=per_split)
        PrivacyLedger(home.db, home.audit, actor="bench").set_budget("pneumonia", 100.0)
        home.db.close()
        homes.append(home.path)
    token = ring.sign(claims([(h, "pneumonia") for h in hospitals], eps=8.0))
    return homes, token, ring


def _simulate(homes: list[Path], token: str, ring: Any, rounds: int, results: Path
              ) -> dict[str, Any]:
    from flwr.app import Context, Message
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from access_control.permits import unverified_claims
    from access_control.run_credentials import ReportKey
    from federation.apps import client as governed
    from federation.apps.server import main as server_main
    from federation.apps.tasks import NodeContext
    from federation.launch.params import RunParams
    from federation.launch.report import REPORT, ResultsSender, reporting_to
    from federation.node.consent import RegimeConsentFilter
    from tests.federation.helpers import tickets_for
    from tests.fixtures.portal import ResultsPortal

    app_hash = unverified_claims(token)["app_hash"]

    def ctx(msg: Message, context: Context) -> NodeContext:
        home = homes[int(context.node_config["partition-id"])]
        return NodeContext(home=home, run_id=f"sim-{msg.metadata.run_id}", app_hash=app_hash,
                           consent_filter=RegimeConsentFilter(), revocations=_no_revocations,
                           run_tickets=tickets_for(ring, token))

    params = RunParams(permit=token, rounds=rounds, batch_size=32, target_epsilon=4.0,
                       round_timeout=600)
    config = params.to_run_config()
    # The simulation has no SuperLink runtime: this process plays it, opening the run's
    # credential with a report key of its own, and the real portal app takes the results.
    key = ReportKey.load_or_create(results / "superlink")
    portal = ResultsPortal(results / "portal", report_key=key.public).start()

    # run_simulation takes no run config (and Flower forbids changing a node's), so each
    # handler is given a copy of its context that carries the run's config.
    def with_config(handler):  # noqa: ANN001, ANN202
        def wrapped(msg: Message, context: Context) -> Message:
            # runs in a Ray worker process: the same handlers, told where each virtual
            # node's home is and the permit's app hash (there is no installed FAB)
            governed._ctx = ctx
            return handler(msg, Context(
                run_id=context.run_id, node_id=context.node_id,
                node_config=context.node_config, state=context.state,
                run_config={**context.run_config, **config}))
        return wrapped

    client_app = ClientApp()
    client_app.train()(with_config(governed.train))
    client_app.evaluate()(with_config(governed.evaluate))
    for name in ("close", "audit"):
        if hasattr(governed, name):
            client_app.query(name)(with_config(getattr(governed, name)))
    sim_server = ServerApp()

    sealed, folder = portal.record("run", {"rounds": rounds})

    @sim_server.main()
    def _main(grid: Any, context: Context) -> None:
        context.run_config.update(config)
        sender = ResultsSender(portal.url, key.open(sealed), context.run_id)
        with reporting_to(sender):
            server_main(grid, context)

    t0 = time.time()
    try:
        run_simulation(server_app=sim_server, client_app=client_app, num_supernodes=len(homes),
                       backend_config={"client_resources": {"num_cpus": 1}})
    finally:
        portal.stop()
    seconds = time.time() - t0
    report = json.loads((folder / REPORT).read_text())
    trained = [sum(n.get("status") == "trained" for n in r["nodes"]) for r in report["rounds"]]
    if report.get("status") != "completed" or trained != [len(homes)] * rounds:
        raise SystemExit(f"the simulated run did not train on every hospital: status "
                         f"{report.get('status')!r}, trained per round {trained}, "
                         f"error {report.get('error')!r}")
    return {"seconds": seconds, "auc": (report["rounds"][-1].get("evaluate") or {}).get("auc"),
            "round_seconds": [r["seconds"] for r in report["rounds"]]}


def _no_revocations():  # noqa: ANN202 - RevocationList
    from federation.node.revocations import RevocationList

    return RevocationList(frozenset(), "bench", time.time())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hospitals", type=int, nargs="+", default=[10, 50, 100])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-split", type=int, default=20)
    args = ap.parse_args(argv)
    if args.rounds < 2:
        ap.error("--rounds must be at least 2: round 1 also starts the simulation's workers")
    if importlib.util.find_spec("ray") is None:
        return _blocked("Ray is not installed: install the project's `bench` extra "
                        "(pip install -e '.[bench]') for Flower's simulation engine")
    rows = []
    for n in args.hospitals:
        with tempfile.TemporaryDirectory() as tmp:
            homes, token, ring = _prepare(Path(tmp), n, args.per_split)
            out = _simulate(homes, token, ring, args.rounds, Path(tmp) / "results")
        first, *later = out["round_seconds"]
        steady = sum(later) / len(later)
        rows.append({"hospitals": n, "rounds": args.rounds, "final_auc": out["auc"],
                     "first_round_seconds": first, "seconds_per_round": steady,
                     "seconds_per_node_round": steady / n,
                     "round_seconds": out["round_seconds"], "wall_seconds": out["seconds"]})
        print(f"{n} hospitals: {steady:.1f} s per round after the first ({first:.1f} s, "
              f"workers starting), {out['seconds']:.0f} s in all", file=sys.stderr)
    base = rows[0]
    for r in rows:
        r["ratio_to_smallest"] = r["seconds_per_round"] / base["seconds_per_round"]
        r["linear_ratio"] = r["hospitals"] / base["hospitals"]
        r["growth_vs_linear"] = r["ratio_to_smallest"] / r["linear_ratio"]
    write_result("scale", {"status": "measured", "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
