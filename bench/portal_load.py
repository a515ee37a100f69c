"""Portal throughput: authenticated `GET /v1/requests/{id}` vs bare `GET /healthz`.

Both routes are hit on the same portal process in the same run, alternating
rounds so that machine noise falls on both; the figure that matters is the ratio
(aim: the authenticated route keeps >= 50 % of the bare route's throughput).

    python bench/portal_load.py [--seconds 5] [--workers 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from access_control.keycloak.bootstrap import admin_client, bootstrap  # noqa: E402
from access_control.keycloak.oidc import password_grant  # noqa: E402
from access_control.keycloak.realm import CLI_CLIENT, DEMO_PASSWORD  # noqa: E402
from access_control.keycloak.server import KeycloakServer, free_port  # noqa: E402
from bench.common import write_result  # noqa: E402


def load(url: str, headers: dict[str, str], seconds: float, workers: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        nonlocal errors
        mine: list[float] = []
        bad = 0
        with httpx.Client(headers=headers, timeout=30) as http:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                resp = http.get(url)
                mine.append(time.perf_counter() - start)
                bad += resp.status_code != 200
        with lock:
            latencies.extend(mine)
            errors += bad

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tre-bench-"))
    print("starting Keycloak …", flush=True)
    kc = KeycloakServer.start(data_dir=work / "keycloak")
    portal = None
    try:
        bootstrap(admin_client(kc.base_url, kc.admin_username, kc.admin_password))
        port = free_port()
        env = os.environ | {"TRE_KEYCLOAK_URL": kc.base_url, "TRE_STATE_DIR": str(work / "p")}
        portal = subprocess.Popen(
            [sys.executable, "-m", "tre.cli.main", "portal", "serve", "--port", str(port)],
            env=env)
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)

        def token(user: str) -> str:
            return password_grant(kc.base_url, "tre", user, DEMO_PASSWORD,
                                  client_id=CLI_CLIENT)["access_token"]

        admin = {"Authorization": f"Bearer {token('admin1')}"}
        httpx.post(f"{base}/v1/apps", headers=admin, json={
            "app_id": "bench-app", "app_hash": "0" * 64, "description": "bench"}
        ).raise_for_status()
        alice = {"Authorization": f"Bearer {token('alice')}"}
        body = {"title": "bench", "organisation": "bench", "purpose": "statistics",
                "research_question": "load", "datasets": [{"node_id": "h", "dataset_id": "d"}],
                "epsilon": 1.0, "delta": 1e-5, "app_id": "bench-app", "duration_days": 1,
                "legal_basis": "ehds_art_68_data_permit", "data_form": "anonymised",
                "expected_outputs": "none"}
        rid = httpx.post(f"{base}/v1/requests", headers=alice, json=body).json()["id"]

        rounds: dict[str, list[dict[str, float]]] = {"healthz": [], "authenticated": []}
        load(f"{base}/healthz", {}, 1.0, args.workers)  # warm-up
        for i in range(args.rounds):
            rounds["healthz"].append(load(f"{base}/healthz", {}, args.seconds, args.workers))
            rounds["authenticated"].append(
                load(f"{base}/v1/requests/{rid}", alice, args.seconds, args.workers))
            print(f"round {i + 1}: healthz {rounds['healthz'][-1]['rps']:.0f} req/s, "
                  f"authenticated {rounds['authenticated'][-1]['rps']:.0f} req/s", flush=True)
    finally:
        if portal is not None:
            portal.terminate()
            portal.wait(30)
        kc.stop()

    summary = {k: {m: statistics.median(r[m] for r in v) for m in v[0]}
               for k, v in rounds.items()}
    ratio = summary["authenticated"]["rps"] / summary["healthz"]["rps"]
    path = write_result("portal_load", {
        "workers": args.workers, "seconds_per_round": args.seconds, "rounds": rounds,
        "median": summary, "ratio_authenticated_vs_healthz": ratio, "aim": ">= 0.5",
    })
    print(f"authenticated/healthz throughput ratio {ratio:.2f} "
          f"(p50 {summary['authenticated']['p50_ms']:.1f} ms vs "
          f"{summary['healthz']['p50_ms']:.1f} ms) -> {path}")


if __name__ == "__main__":
    main()
