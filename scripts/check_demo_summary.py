"""CI's check of `tre demo --exit --json`: the story ran end to end and the summary says so."""

from __future__ import annotations

import json
import sys
from pathlib import Path

#: the demo's default recipe releases a model at AUC ≈ 0.95 (BENCHMARKS.md, demo_repeat)
MIN_AUC = 0.92


def main(path: str) -> int:
    summary = json.loads(Path(path).read_text())
    problems = []
    if summary.get("nodes") != 3:
        problems.append(f"nodes is {summary.get('nodes')}, not 3")
    if summary.get("output_released") is not True:
        problems.append("the run's output was not released")
    audits = summary.get("audit_verified") or {}
    if not audits or not all(audits.values()):
        problems.append(f"audit chains not all verified: {audits}")
    cap = summary.get("epsilon_cap")
    eps = summary.get("epsilon_per_node") or {}
    if not eps or cap is None or any(v > cap for v in eps.values()):
        problems.append(f"ε per node {eps} not within the cap {cap}")
    auc = summary.get("test_auc")
    if not isinstance(auc, int | float):
        problems.append("no test AUC reported")
    elif auc < MIN_AUC:
        problems.append(f"the released model's test AUC {auc:.3f} is below {MIN_AUC}")
    if not isinstance(summary.get("test_accuracy_calibrated"), int | float):
        problems.append("no accuracy at the calibrated threshold on the model card")
    hosts = summary.get("hosts") or {}
    if hosts.get("separate"):  # `--netns`: from each hospital Fleet answers, Control does not
        seen = hosts.get("reachable_from_hospitals") or {}
        if len(seen) != 3 or not all(v.get("fleet") and not v.get("control")
                                     for v in seen.values()):
            problems.append(f"hospitals must reach Fleet and not Control: {seen}")
    for p in problems:
        print(f"demo summary: {p}", file=sys.stderr)
    if not problems:
        where = "separate hosts" if hosts.get("separate") else "loopback"
        print(f"demo summary ok ({where}): AUC {auc:.3f}, accuracy at the calibrated "
              f"threshold {summary['test_accuracy_calibrated']:.3f}, ε {eps} ≤ {cap}, "
              f"stages {summary.get('seconds')}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
