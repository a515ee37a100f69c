"""The demo, run again and again as a new user would: does the airlock decide the same way?

Each run is `scripts/demo --exit --json` (with `--netns` as root, as CI runs it) in a
fresh state directory; the figures are each run's outcome, its failed stage if any,
and the airlock's membership-inference finding per node. Long (about 12 minutes a run):
a sweep, not a test.

    python bench/demo_repeat.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def one_run(index: int, netns: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"demo-repeat-{index}-"))
    summary = work / "demo.json"
    cmd = ["bash", "scripts/demo", *(["--netns"] if netns else []), "--exit", "--json",
           str(summary), "--state-dir", str(work / "demo")]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    doc = json.loads(summary.read_text()) if summary.exists() else {}
    checks = doc.get("airlock_checks", {})
    mia = checks.get("membership_inference", {})
    return {"run": index, "exit_code": proc.returncode, "seconds": round(seconds, 1),
            "failed_stage": doc.get("failed_stage"), "output_released":
            bool(doc.get("output_released")), "test_auc": doc.get("test_auc"),
            "test_accuracy_calibrated": doc.get("test_accuracy_calibrated"),
            "summary_check": subprocess.run(
                [sys.executable, "scripts/check_demo_summary.py", str(summary)], cwd=REPO,
                capture_output=True, text=True).returncode == 0 if doc else False,
            "airlock_passed": all(c["passed"] for c in checks.values()) if checks else None,
            "membership_inference": mia.get("detail"),
            "error_tail": None if proc.returncode == 0 else proc.stderr[-600:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-netns", action="store_true",
                        help="every party on loopback of this host (default as root: netns)")
    args = parser.parse_args()
    netns = os.geteuid() == 0 and not args.no_netns
    runs = []
    for i in range(1, args.runs + 1):
        runs.append(one_run(i, netns))
        print(json.dumps(runs[-1]), flush=True)
    released = sum(r["output_released"] for r in runs)
    path = write_result("demo_repeat", {
        "netns": netns, "runs": runs, "released": released, "of": len(runs),
        "summary": f"the demo's airlock released the model in {released} of {len(runs)} "
                   "consecutive runs"})
    print(path)


if __name__ == "__main__":
    main()
