"""What governance and DP cost (issue 4's overhead bench).

1. DP step vs non-DP step: the same small GroupNorm CNN and batch, one thread,
   median over repeated steps, for each Opacus per-sample-gradient mode.
2. Seconds per round of the governed app vs a bare Flower app (bench/bare_app:
   same model, data and DP-SGD, no permit / consent / ledger / audit), both on the
   same real SuperLink + 3 SuperNodes in the same run, alternating.

Writes bench/results/federation_overhead.json.

    python bench/federation_overhead.py [--rounds 2] [--skip-rounds]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import write_result  # noqa: E402
from federation.training.models import ModelSpec, build_model  # noqa: E402


def step_times(mode: str | None, batch: int, repeats: int) -> float:
    """Median seconds of one optimiser step (forward, backward, clip+noise when DP)."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    x, y = torch.randn(batch * 4, 1, 28, 28), torch.randint(0, 2, (batch * 4,))
    model = build_model("cnn-gn", ModelSpec(), seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    if mode is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, opt, _ = PrivacyEngine().make_private(
                module=model, optimizer=opt,
                data_loader=DataLoader(TensorDataset(x, y), batch_size=batch),
                noise_multiplier=1.0, max_grad_norm=1.0, grad_sample_mode=mode,
                poisson_sampling=False)
    loss_fn = torch.nn.CrossEntropyLoss()
    xb, yb = x[:batch], y[:batch]
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(repeats + 3):
            t = time.perf_counter()
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
            times.append(time.perf_counter() - t)
    return statistics.median(times[3:])


def dp_steps(batch: int, repeats: int) -> dict:
    base = step_times(None, batch, repeats)
    out = {"batch": batch, "non_dp_step_s": base, "modes": {}}
    for mode in ("hooks", "ew", "functorch"):
        try:
            t = step_times(mode, batch, repeats)
            out["modes"][mode] = {"dp_step_s": t, "ratio": t / base}
        except Exception as exc:  # noqa: BLE001 - a mode the model does not support
            out["modes"][mode] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    return out


def rounds_bench(n_rounds: int, pairs: int) -> dict:
    from access_control.permits import PermitKeyRing
    from federation.apps.launch import follow_run, start_run, write_connection
    from federation.apps.params import RunParams
    from federation.node.ledger import PrivacyLedger
    from federation.superlink import flower_env, tool
    from tests.federation.helpers import Portal, claims, make_home, populate
    from tests.fixtures.flower import FlowerCluster

    tmp = Path(tempfile.mkdtemp(prefix="tre-overhead-"))
    portal = Portal()
    ring = PermitKeyRing.load_or_create(tmp / "ring.json")
    hospitals = ["hospital-1", "hospital-2", "hospital-3"]
    homes = []
    for i, h in enumerate(hospitals):
        home = make_home(tmp / "nodes", h, ring, portal=portal.url)
        populate(home, "pneumonia", i, 3)
        PrivacyLedger(home.db, home.audit, actor="bench").set_budget("pneumonia", 1000.0)
        home.db.close()
        homes.append(home.path)
    cluster = FlowerCluster(tmp / "flower")
    (tmp / "flower").mkdir()
    governed, bare = [], []
    try:
        cluster.start_superlink()
        for p in homes:
            cluster.start_node(p)
        for k in range(pairs):
            token = ring.sign(claims([(h, "pneumonia") for h in hospitals], eps=8.0))
            # the bare app uses the noise multiplier the governed run derives
            res_dir = tmp / f"governed-{k}"
            rep = follow_run(start_run(cluster.superlink, RunParams(
                permit=token, rounds=n_rounds, batch_size=128, lr=0.5), res_dir),
                timeout_s=1800)
            governed += [r["seconds"] for r in rep["rounds"]]
            nm = rep["rounds"][0]["nodes"][0]["noise_multiplier"]
            bare_dir = tmp / f"bare-{k}"
            bare_dir.mkdir()
            home = bare_dir / ".flwr"
            write_connection(home, cluster.superlink)
            app_dir = bare_dir / "app"
            shutil.copytree(ROOT / "bench" / "bare_app", app_dir)
            cfg = (f'rounds = {n_rounds}\nbatch-size = 128\nlr = 0.5\n'
                   f'noise-multiplier = {nm}\nresults-dir = "{bare_dir}"\n')
            (bare_dir / "cfg.toml").write_text(cfg)
            subprocess.run([tool("flwr"), "run", str(app_dir), "tre", "--run-config",
                            str(bare_dir / "cfg.toml")], env=flower_env(home), check=True,
                           capture_output=True)
            deadline = time.monotonic() + 1800
            out = bare_dir / "bare.jsonl"
            while time.monotonic() < deadline:
                if out.exists() and len(out.read_text().splitlines()) >= n_rounds:
                    break
                time.sleep(1)
            bare += [json.loads(line)["seconds"] for line in out.read_text().splitlines()]
    finally:
        cluster.stop()
        portal.close()
    g, b = statistics.median(governed), statistics.median(bare)
    return {"rounds_per_run": n_rounds, "pairs": pairs, "governed_round_s": governed,
            "bare_round_s": bare, "governed_median_s": g, "bare_median_s": b,
            "ratio_governed_to_bare": g / b, "aim_ratio": 1.05}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--skip-rounds", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out: dict = {"dp_step": dp_steps(args.batch, args.repeats), "aim_dp_step_ratio": 2.0}
    print(json.dumps(out["dp_step"], indent=1), flush=True)
    if not args.skip_rounds:
        out["rounds"] = rounds_bench(args.rounds, args.pairs)
        print(json.dumps(out["rounds"], indent=1))
    if not args.no_write:
        print("wrote", write_result("federation_overhead", out))


if __name__ == "__main__":
    main()
