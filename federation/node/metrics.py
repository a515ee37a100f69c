"""Prometheus metrics of a hospital node: ε per dataset, consent snapshot age, audit size.

Served next to the SuperNode by `tre node serve --metrics-port P` so that hospital IT
sees, in its own monitoring, how much privacy budget each dataset has left and
whether the node could run at all (a stale consent snapshot means it refuses runs).

Why a collector that opens the store per scrape: Flower starts a ClientApp process
per message and each opens `node.duckdb`; DuckDB lets one process hold the file at
a time. The collector therefore opens it through `node_session` (which waits on the
file lock), reads, and closes it at once, never keeping it between scrapes. When the
store stays locked past `lock_timeout_s`, the scrape still answers, with
`tre_node_store_up 0`, instead of hanging Prometheus.

Nothing here is patient-level: only per-dataset totals the operator already sees in
`tre node budget show` and `tre node status`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


@dataclass
class NodeReading:
    """What one scrape read from the store."""

    hospital_id: str
    budgets: list[dict[str, Any]] = field(default_factory=list)
    consent: dict[str, Any] = field(default_factory=dict)
    audit_rows: int = 0


def read_node(home_path: str | Path, *, lock_timeout_s: float = 5.0) -> NodeReading:
    """Read the node's figures in one short session on its store."""
    from federation.node import consent
    from federation.node.home import node_session
    from federation.node.ledger import PrivacyLedger

    with node_session(home_path, timeout_s=lock_timeout_s) as home:
        ledger = PrivacyLedger(home.db, home.audit, actor=home.actor)
        budgets = [s.as_dict() for s in ledger.statuses()]
        snapshot = consent.status(home)
        return NodeReading(home.config.hospital_id, budgets, snapshot, home.audit.count())


class NodeCollector(Collector):
    """Reads the node store at each scrape (see the module docstring)."""

    def __init__(self, home_path: str | Path, *, lock_timeout_s: float = 5.0) -> None:
        self.home_path = Path(home_path)
        self.lock_timeout_s = lock_timeout_s
        self._lock = threading.Lock()  # one scrape at a time opens the store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        started = time.monotonic()
        with self._lock:
            try:
                reading: NodeReading | None = read_node(self.home_path,
                                                        lock_timeout_s=self.lock_timeout_s)
            except (duckdb.Error, OSError) as exc:
                log.warning("node metrics: store not readable", extra={"error": str(exc)})
                reading = None
        yield GaugeMetricFamily("tre_node_store_up", "1 when this scrape could read the store",
                                value=int(reading is not None))
        yield GaugeMetricFamily("tre_node_scrape_seconds", "Time this scrape took",
                                value=time.monotonic() - started)
        if reading is None:
            return
        yield from _budget_families(reading)
        yield from _consent_families(reading)
        audit = GaugeMetricFamily("tre_node_audit_rows", "Rows in the node's audit log",
                                  labels=["hospital"])
        audit.add_metric([reading.hospital_id], reading.audit_rows)
        yield audit


_BUDGET = (
    ("tre_node_epsilon_total", "epsilon_total", "Total ε the operator allows per dataset"),
    ("tre_node_epsilon_spent", "epsilon_spent", "ε charged per dataset"),
    ("tre_node_epsilon_reserved", "epsilon_reserved",
     "ε reserved by open runs per dataset, not charged yet"),
    ("tre_node_epsilon_remaining", "epsilon_remaining",
     "ε left for new runs per dataset (total - spent - reserved)"),
    ("tre_node_active_runs", "active_runs", "Open ε reservations (running runs) per dataset"),
)


def _budget_families(reading: NodeReading) -> Iterator[GaugeMetricFamily]:
    for name, key, doc in _BUDGET:
        family = GaugeMetricFamily(name, doc, labels=["hospital", "dataset"])
        for status in reading.budgets:
            value = status.get(key)
            if value is not None:  # no total set: no total/remaining sample, not a fake 0
                family.add_metric([reading.hospital_id, status["dataset_id"]], float(value))
        yield family


def _consent_families(reading: NodeReading) -> Iterator[GaugeMetricFamily]:
    snap = reading.consent
    labels = [reading.hospital_id]
    age = GaugeMetricFamily("tre_node_consent_snapshot_age_seconds",
                            "Seconds since the consent snapshot was pulled from the portal",
                            labels=["hospital"])
    if snap.get("age_s") is not None:
        age.add_metric(labels, float(snap["age_s"]))
    yield age
    fresh = GaugeMetricFamily("tre_node_consent_snapshot_fresh",
                              "1 when the snapshot is young enough to run on "
                              "(node.toml consent_max_age_s)", labels=["hospital"])
    fresh.add_metric(labels, int(bool(snap.get("fresh"))))
    yield fresh
    consents = GaugeMetricFamily("tre_node_consent_records",
                                 "Consent records in the node's snapshot", labels=["hospital"])
    consents.add_metric(labels, int(snap.get("consents") or 0))
    yield consents
    if snap.get("version") is not None:
        version = GaugeMetricFamily("tre_node_consent_snapshot_version",
                                    "Version of the portal's consent registry last pulled",
                                    labels=["hospital"])
        version.add_metric(labels, int(snap["version"]))
        yield version


def node_registry(home_path: str | Path, *, lock_timeout_s: float = 5.0) -> CollectorRegistry:
    """A registry holding only the node collector (no process metrics of the CLI)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(home_path, lock_timeout_s=lock_timeout_s))
    return registry


def serve_metrics(home_path: str | Path, port: int, *, host: str = "127.0.0.1",
                  lock_timeout_s: float = 5.0, certfile: str | Path | None = None,
                  keyfile: str | Path | None = None) -> Any:
    """Serve `/metrics` on host:port from a daemon thread (HTTPS with `certfile` and
    `keyfile`); returns the HTTP server (call `.shutdown()` to stop it)."""
    server, _thread = start_http_server(
        port, addr=host, registry=node_registry(home_path, lock_timeout_s=lock_timeout_s),
        certfile=str(certfile) if certfile else None, keyfile=str(keyfile) if keyfile else None,
    )
    return server
