"""Run results on their way from the ServerApp to the portal, and where they land.

The ServerApp holds no folder of the portal's: it sends progress events, the final
report and the model over HTTPS to the portal that started the run (`ResultsSender`,
authenticated by the run's own credential, `access_control.run_credentials`). The
portal's results route keeps them in its own state (`RunFolder`: `progress.jsonl`,
`report.json`, `model.pt`, and the plot it draws itself, `report.png`), which its
run follower reads.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import httpx

PROGRESS = "progress.jsonl"
REPORT = "report.json"
MODEL = "model.pt"
PLOT = "report.png"
# the run-config key carrying the run's credential, sealed to the SuperLink
CREDENTIAL_KEY = "report-credential"
SEND_ATTEMPTS = 8


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def event(name: str, **fields: Any) -> dict[str, Any]:
    """One progress event as it travels and is stored (NaN and infinities as null)."""
    return _clean({"event": name, "time": time.time(), **fields})


class RunFolder:
    """One run's results in the receiving party's own state folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append_event(self, record: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with (self.path / PROGRESS).open("a") as f:
            f.write(json.dumps(_clean(record)) + "\n")

    def write(self, name: str, data: bytes) -> Path:
        """Write one result file whole (a reader never sees half of it)."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".{name}.tmp"
        tmp.write_bytes(data)
        return tmp.replace(self.path / name)

    def write_report(self, report: dict[str, Any]) -> Path:
        return self.write(REPORT, json.dumps(_clean(report), indent=2).encode())


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


class ResultsSender:
    """The ServerApp's only way out for results: the portal's `/v1/results` routes, with
    the run's credential. Retries a portal that is briefly away; a result the portal
    refuses (4xx) fails the run rather than vanishing."""

    def __init__(self, portal_url: str, credential: str, flower_run_id: int, *,
                 verify: str | bool = True) -> None:
        self.base = portal_url.rstrip("/") + "/v1/results"
        self.client = httpx.Client(verify=verify, timeout=60, headers={
            "Authorization": f"Bearer {credential}", "X-Flower-Run-Id": str(flower_run_id)})

    def _send(self, method: str, path: str, **kwargs: Any) -> None:
        for attempt in range(SEND_ATTEMPTS):
            try:
                resp = self.client.request(method, f"{self.base}/{path}", **kwargs)
            except httpx.TransportError:
                if attempt + 1 == SEND_ATTEMPTS:
                    raise
                time.sleep(min(2 ** attempt * 0.25, 8))
                continue
            if resp.status_code >= 500 and attempt + 1 < SEND_ATTEMPTS:
                time.sleep(min(2 ** attempt * 0.25, 8))
                continue
            if resp.status_code >= 400:
                raise RuntimeError(f"the portal refused {path}: {resp.status_code} "
                                   f"{resp.text[:300]}")
            return

    def emit(self, name: str, **fields: Any) -> dict[str, Any]:
        record = event(name, **fields)
        self._send("POST", "events", json=record)
        return record

    def report(self, report: dict[str, Any]) -> None:
        self._send("PUT", "report", json=_clean(report))

    def model(self, data: bytes) -> None:
        self._send("PUT", "model", content=data,
                   headers={"Content-Type": "application/octet-stream"})

    def close(self) -> None:
        self.client.close()


_SENDER: ContextVar[ResultsSender | None] = ContextVar("tre_results_sender", default=None)


@contextmanager
def reporting_to(sender: ResultsSender) -> Iterator[ResultsSender]:
    """Set by the SuperLink's ServerApp runtime around one run."""
    token = _SENDER.set(sender)
    try:
        yield sender
    finally:
        _SENDER.reset(token)
        sender.close()


def results_sender() -> ResultsSender:
    """Where this run's results go. A ServerApp started any other way than by the
    SuperLink's runtime for a portal-submitted run has nowhere to send them."""
    sender = _SENDER.get()
    if sender is None:
        raise RuntimeError("this run has no channel to the portal: its ServerApp was not "
                           "started by the SuperLink runtime for a run the portal submitted")
    return sender


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
    if ax1.lines:
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
