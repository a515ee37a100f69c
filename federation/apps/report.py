"""Run progress events, the run report (JSON) and its plot (PNG).

The ServerApp appends one JSON line per event to `progress.jsonl` in the run's
results folder (the CLI and the portal follow that file) and writes
`report.json`, `model.pt` and `report.png` at the end.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

PROGRESS = "progress.jsonl"
REPORT = "report.json"
MODEL = "model.pt"
PLOT = "report.png"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class EventLog:
    """Append-only progress events of one run (JSON lines, flushed per event)."""

    def __init__(self, results_dir: str | Path | None) -> None:
        self.path = Path(results_dir) / PROGRESS if results_dir else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        record = _clean({"event": event, "time": time.time(), **fields})
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        return record


def read_events(results_dir: str | Path, *, offset: int = 0) -> tuple[list[dict], int]:
    """Events written since byte `offset`, and the new offset (for following a run)."""
    path = Path(results_dir) / PROGRESS
    if not path.exists():
        return [], offset
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    lines = data[:end].decode().splitlines()
    return [json.loads(line) for line in lines if line.strip()], offset + end


def write_report(results_dir: str | Path, report: dict[str, Any]) -> Path:
    path = Path(results_dir) / REPORT
    path.write_text(json.dumps(_clean(report), indent=2))
    return path


def plot_report(report: dict[str, Any], path: str | Path) -> Path:
    """Two panels: federated evaluation metrics and ε spent per hospital, per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = report.get("rounds", [])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    xs = [r["round"] for r in rounds]
    for key in ("auc", "accuracy"):
        ys = [(r.get("evaluate") or {}).get(key) for r in rounds]
        if any(y is not None for y in ys):
            ax1.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", label=key)
    ax1.set_xlabel("round")
    ax1.set_title("federated evaluation (aggregate)")
    ax1.set_ylim(0, 1)
    ax1.legend()
    hospitals = sorted({n["hospital_id"] for r in rounds for n in r.get("nodes", [])
                        if n.get("hospital_id")})
    for h in hospitals:
        ys = []
        for r in rounds:
            eps = [n.get("epsilon") for n in r.get("nodes", []) if n.get("hospital_id") == h]
            ys.append(eps[0] if eps and eps[0] is not None else float("nan"))
        ax2.plot(xs, ys, marker="o", label=h)
    caps = {n.get("epsilon_target") for r in rounds for n in r.get("nodes", [])
            if n.get("epsilon_target")}
    for cap in caps:
        ax2.axhline(cap, linestyle="--", color="grey", linewidth=1)
    ax2.set_xlabel("round")
    ax2.set_title("ε spent per hospital (dashed: reserved)")
    if hospitals:
        ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
