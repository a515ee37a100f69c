"""Seconds per round against the number of hospitals, on Flower's simulation engine.

`python -m bench.scale [--hospitals 10 50 100] [--rounds 2]` runs the governed
training app (the node-installed ServerApp and the same train/evaluate tasks,
permit check, regime consent filter and ε ledger at every virtual node) with N
virtual hospitals, each a real node home on DuckDB holding a small partition of
PneumoniaMNIST, and reports seconds per round and the ratio to the smallest N
(aim: per-round time grows no worse than linearly).

The simulation engine needs Ray (`flwr[simulation]`). Where Ray is not installed
the benchmark writes `bench/results/scale.json` with status "blocked" and exits 2:
it does not fall back to something else and call it the same measurement.

Simulation differs from a deployment in one governed step: there is no installed
FAB to hash, so the virtual nodes are told the permit's app hash (`app_hash` of the
NodeContext); every other check runs as on a real node.
"""

from __future__ import annotations

import argparse
import importlib.util
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
    return homes, token


def _simulate(homes: list[Path], token: str, rounds: int, results: Path) -> dict[str, Any]:
    from flwr.app import Context, Message
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from access_control.permits import unverified_claims
    from federation.apps import client as governed
    from federation.apps.params import RunParams
    from federation.apps.server import main as server_main
    from federation.apps.tasks import NodeContext
    from federation.node.governance import RegimeConsentFilter

    app_hash = unverified_claims(token)["app_hash"]

    def ctx(msg: Message, context: Context) -> NodeContext:
        home = homes[int(context.node_config["partition-id"])]
        return NodeContext(home=home, run_id=f"sim-{msg.metadata.run_id}", app_hash=app_hash,
                           consent_filter=RegimeConsentFilter(), revocations=_no_revocations)

    governed._ctx = ctx  # the same handlers, told where each virtual node's home is
    params = RunParams(permit=token, rounds=rounds, batch_size=32, target_epsilon=4.0,
                       results_dir=str(results), round_timeout=600)
    config = params.to_run_config()

    # run_simulation takes no run config: both sides get the run's config injected
    def with_config(handler):  # noqa: ANN001, ANN202
        def wrapped(msg: Message, context: Context) -> Message:
            context.run_config.update(config)
            return handler(msg, context)
        return wrapped

    client_app = ClientApp()
    client_app.train()(with_config(governed.train))
    client_app.evaluate()(with_config(governed.evaluate))
    for name in ("close", "audit"):
        if hasattr(governed, name):
            client_app.query(name)(with_config(getattr(governed, name)))
    sim_server = ServerApp()

    @sim_server.main()
    def _main(grid: Any, context: Context) -> None:
        context.run_config.update(config)
        server_main(grid, context)

    t0 = time.time()
    run_simulation(server_app=sim_server, client_app=client_app, num_supernodes=len(homes),
                   backend_config={"client_resources": {"num_cpus": 1}})
    return {"seconds": time.time() - t0}


def _no_revocations():  # noqa: ANN202 - RevocationList
    from federation.node.governance import RevocationList

    return RevocationList(frozenset(), "bench", time.time())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hospitals", type=int, nargs="+", default=[10, 50, 100])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--per-split", type=int, default=20)
    args = ap.parse_args(argv)
    if importlib.util.find_spec("ray") is None:
        return _blocked("Ray is not installed (flwr[simulation] extra); the simulation engine "
                        "cannot start and no dependency was added")
    rows = []
    for n in args.hospitals:
        with tempfile.TemporaryDirectory() as tmp:
            homes, token = _prepare(Path(tmp), n, args.per_split)
            out = _simulate(homes, token, args.rounds, Path(tmp) / "results")
        rows.append({"hospitals": n, "rounds": args.rounds,
                     "seconds_per_round": out["seconds"] / args.rounds})
    base = rows[0]
    for r in rows:
        r["ratio_to_smallest"] = r["seconds_per_round"] / base["seconds_per_round"]
        r["linear_ratio"] = r["hospitals"] / base["hospitals"]
    write_result("scale", {"status": "measured", "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
