"""Identifiers per second through the pseudonymisation service vs a keyed HMAC in process.

    python bench/pseudonymise.py [--n 100000] [--batch 10000]

Starts (or reuses) the development Keycloak and bootstraps the realm, then serves the
real pseudonymisation service (`pseudonymisation.service.create_app`, its own home,
key and audit log) with uvicorn on a loopback port, in a thread of this process
(`tests.fixtures.pseudonymiser.LivePseudonymiser`, as the tests serve it). A
hospital node's service-account token (client-credentials grant) authenticates. N
valid INS-NIR identifiers (the client normalises them first, timed apart) go through
`PseudonymClient.pseudonyms` in batches: blind, POST /v1/evaluate, finalize.

Baseline, same machine and run: the node's keyed HMAC-SHA256 pseudonym
(`federation.node.home.pseudonyms`, the node-local key this service replaces) of the
same normalised values. `ratio` is our throughput over the baseline's.

Where the time goes is measured in separate passes over the same inputs: the
client's blinding, the service's evaluation (decode, check, skS·B) called in
process, the client's finalisation; `http_and_service` is what remains of the
end-to-end time (JSON, HTTP on loopback, token check, policy, rate limit, audit).
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from access_control.keycloak import oidc  # noqa: E402
from access_control.keycloak.bootstrap import admin_client, bootstrap  # noqa: E402
from bench.common import local_keycloak, write_result  # noqa: E402
from federation.node.home import pseudonyms as hmac_pseudonyms  # noqa: E402
from pseudonymisation import oprf  # noqa: E402
from pseudonymisation.identifiers import INS_NIR, Identifier  # noqa: E402
from pseudonymisation.wire import decode, encode  # noqa: E402
from tests.fixtures.pseudonymiser import LivePseudonymiser  # noqa: E402


def nirs(n: int, rng: random.Random) -> list[str]:
    """N distinct valid NIRs written as people write them (spaces), key = 97 − mod 97."""
    out: set[str] = set()
    while len(out) < n:
        number = f"{rng.choice('12')}{rng.randint(0, 99):02d}{rng.randint(1, 12):02d}" \
                 f"{rng.randint(1, 95):02d}{rng.randint(1, 999):03d}{rng.randint(1, 999):03d}"
        out.add(f"{number} {97 - int(number) % 97:02d}")
    return sorted(out)


class Clock:
    """Wall and CPU seconds of each step: the machine is shared, and CPU time (this
    process, service thread included) shows where the work goes when others load it."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def time(self, name: str, fn):  # noqa: ANN001, ANN201 - any callable, its result
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        self.wall[name] = time.perf_counter() - w0
        self.cpu[name] = time.process_time() - c0
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="identifiers")
    ap.add_argument("--batch", type=int, default=10_000, help="elements per request")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench-pseudonymise-"))

    with local_keycloak() as server:
        facts = bootstrap(admin_client(server.base_url, server.admin_username,
                                       server.admin_password))
        hospital = facts["hospitals"]["hospital-a"]

        live = LivePseudonymiser(
            work / "pseudonymiser", keycloak_url=server.base_url, keycloak_realm=facts["realm"],
            max_batch=args.batch,
            rate_per_minute=max(args.batch, 10 * args.n)).start()  # the work, not the limit

        def token() -> str:
            return oidc.client_credentials_grant(server.base_url, facts["realm"],
                                                 hospital["client_id"],
                                                 hospital["client_secret"])["access_token"]

        bearer = token()
        written = nirs(args.n, rng)
        clock = Clock()
        identifiers = clock.time("normalise", lambda: [Identifier(INS_NIR, w) for w in written])
        values = [i.value for i in identifiers]
        client = live.client(lambda: bearer, timeout_s=600)
        client.pseudonyms(identifiers[:100])  # warm: JWKS fetch, first connection

        ours = clock.time("ours", lambda: client.pseudonyms(identifiers))
        hmac_key = secrets.token_bytes(32)
        theirs = clock.time("hmac", lambda: hmac_pseudonyms(hmac_key, values))
        assert len(set(ours)) == len(set(theirs)) == args.n

        # where the time goes: the same steps, one at a time, on the same inputs
        inputs = [i.canonical() for i in identifiers]
        blinded = clock.time("blind", lambda: [oprf.blind(d) for d in inputs])
        wire = [encode(b) for _, b in blinded]
        key = live.service.home.key
        evaluated = clock.time("evaluate",
                               lambda: [oprf.blind_evaluate(key, decode(w)) for w in wire])
        clock.time("finalize", lambda: [oprf.finalize(d, r, e) for d, (r, _), e
                                        in zip(inputs, blinded, evaluated, strict=True)])
        live.stop()

        def breakdown(seconds: dict[str, float]) -> dict[str, float]:
            steps = {k: seconds[k] for k in ("blind", "evaluate", "finalize")}
            steps["http_and_service"] = max(0.0, seconds["ours"] - sum(steps.values()))
            return {k: round(v, 3) for k, v in steps.items()}

        ours_s, hmac_s = clock.wall["ours"], clock.wall["hmac"]
        ours_rate, hmac_rate = args.n / ours_s, args.n / hmac_s
        wall, cpu = breakdown(clock.wall), breakdown(clock.cpu)
        figures = {
            "n": args.n, "batch": args.batch,
            "service": "uvicorn on 127.0.0.1 in this process, real Keycloak token (node client)",
            "ours_ids_per_s": round(ours_rate, 1), "hmac_ids_per_s": round(hmac_rate, 1),
            "ours_s": round(ours_s, 3), "hmac_s": round(hmac_s, 4),
            "ratio": round(ours_rate / hmac_rate, 5),
            "ratio_cpu": round(clock.cpu["hmac"] / clock.cpu["ours"], 5),
            "normalise_s": round(clock.wall["normalise"], 3),
            "breakdown_s": wall,
            "breakdown_cpu_s": cpu,
            "breakdown_cpu_share": {k: round(v / clock.cpu["ours"], 3) for k, v in cpu.items()},
            "load_average": os.getloadavg(),
            "us_per_id": {"ours": round(ours_s / args.n * 1e6, 1),
                          "hmac": round(hmac_s / args.n * 1e6, 2)},
        }
        path = write_result("pseudonymise", figures)
        print(f"ours {ours_rate:,.0f} ids/s, HMAC {hmac_rate:,.0f} ids/s, ratio "
              f"{figures['ratio']}; CPU shares {figures['breakdown_cpu_share']}; wrote {path}")


if __name__ == "__main__":
    main()
