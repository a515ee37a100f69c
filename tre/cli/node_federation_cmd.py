"""`tre node serve` and `tre node budget`: the node's federation side."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tre.cli.common import console, fail, print_json, supervise

HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="Node home directory [default: $TRE_NODE_HOME or ./node-home]"),
]

budget_app = typer.Typer(no_args_is_help=True,
                         help="Privacy budget (ε) per dataset: the operator's policy.")


def _home(home: Path | None):  # noqa: ANN202 - NodeHome, imported lazily
    from federation.node.home import NodeHome, NodeHomeError

    path = home or Path(os.environ.get("TRE_NODE_HOME", "node-home"))
    try:
        return NodeHome(path).require()
    except NodeHomeError as exc:
        fail(str(exc))


def serve(
    home: HomeOpt = None,
    superlink: Annotated[str | None, typer.Option(
        "--superlink", help="SuperLink HOST:PORT [default: node.toml superlink]")] = None,
    port: Annotated[int, typer.Option(
        "--port", help="Loopback port of the SuperNode's runtime API (node runtime only)")] = 9094,
    insecure: Annotated[bool, typer.Option(
        "--insecure/--tls", help="Plain HTTP to the SuperLink (loopback / development)")] = True,
    consent_filter: Annotated[str, typer.Option(
        "--consent-filter",
        help="snapshot: the portal's consent registry; regime: dataset regime, no records",
    )] = "snapshot",
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", help="Serve Prometheus /metrics (ε per dataset, consent snapshot "
        "age, audit rows) on this port [default: off]")] = None,
    metrics_host: Annotated[str, typer.Option(
        "--metrics-host", help="Interface for --metrics-port")] = "127.0.0.1",
    metrics_certfile: Annotated[Path | None, typer.Option(
        "--metrics-certfile", envvar="TRE_METRICS_CERTFILE",
        help="Serve /metrics over HTTPS with this certificate")] = None,
    metrics_keyfile: Annotated[Path | None, typer.Option(
        "--metrics-keyfile", envvar="TRE_METRICS_KEYFILE",
        help="Private key of --metrics-certfile")] = None,
    secure: Annotated[bool, typer.Option(
        "--secure", help="TLS to the SuperLink and SuperNode authentication with this node's "
        "enrolled key (created in the home on first use)")] = False,
    root_certificates: Annotated[Path | None, typer.Option(
        "--root-certificates", help="CA certificate of the federation (ca.crt from "
        "`tre federation provision`); required with --secure")] = None,
    enrol_key: Annotated[bool, typer.Option(
        "--enrol/--no-enrol", help="With --secure: register the node key with the portal "
        "(which registers it with the SuperLink) before starting")] = True,
) -> None:
    """Run this hospital's Flower SuperNode (foreground; Ctrl-C stops it)."""
    from federation.node.serve import start_supernode

    h = _home(home)
    if consent_filter not in ("snapshot", "regime"):
        fail("--consent-filter must be snapshot or regime")
    if (metrics_certfile is None) != (metrics_keyfile is None):
        fail("give both --metrics-certfile and --metrics-keyfile, or neither")
    target = superlink or h.config.superlink
    if metrics_port is not None:
        from federation.node.metrics import serve_metrics

        serve_metrics(h.path, metrics_port, host=metrics_host, certfile=metrics_certfile,
                      keyfile=metrics_keyfile)
        scheme = "https" if metrics_certfile else "http"
        console.print(f"metrics on {scheme}://{metrics_host}:{metrics_port}/metrics")
    node_key = None
    if secure:
        from federation.node.enrol import enrol, ensure_node_key
        from federation.node.portal_client import PortalError

        if root_certificates is None or not root_certificates.is_file():
            fail("--secure needs --root-certificates pointing at the federation's ca.crt")
        node_key = ensure_node_key(h)
        if enrol_key:
            try:
                row = enrol(h)
            except PortalError as exc:
                fail(f"enrolment failed: {exc}")
            console.print(f"enrolled as Flower node {row['node_id']}")
        insecure = False
    h.close()  # the SuperNode's ClientApps open node.duckdb themselves, one at a time
    proc = start_supernode(h, target, port=port, insecure=insecure,
                           consent_filter=consent_filter, node_key=node_key,
                           root_certificates=root_certificates)
    console.print(f"SuperNode of [bold]{h.config.hospital_id}[/] → SuperLink {target} "
                  f"(runtime API 127.0.0.1:{port}, node runtime pid {proc.pid}); only this "
                  "node's installed apps run here")
    supervise(proc)


@budget_app.command("set")
def budget_set(
    dataset_id: Annotated[str, typer.Argument(help="Dataset id")],
    epsilon: Annotated[float, typer.Argument(help="Total ε this dataset may ever spend")],
    home: HomeOpt = None,
) -> None:
    """Set a dataset's total privacy budget (recorded in the ledger and the node audit log)."""
    from federation.node.ledger import MAX_DATASET_EPSILON, PrivacyLedger

    if not math.isfinite(epsilon) or not 0 <= epsilon <= MAX_DATASET_EPSILON:
        fail(f"epsilon must be a number from 0 to {MAX_DATASET_EPSILON:g} (got {epsilon}); "
             "a dataset's whole privacy budget is usually between 1 and 50")
    h = _home(home)
    with h.db.reader() as cur:
        known = cur.execute("SELECT count(*) FROM dataset WHERE dataset_id = ?",
                            [dataset_id]).fetchone()[0]
    if not known:
        fail(f"dataset {dataset_id!r} is not held by this node (see `tre node status`)")
    ledger = PrivacyLedger(h.db, h.audit, actor=f"operator@{h.config.hospital_id}")
    ledger.set_budget(dataset_id, epsilon)
    _show(ledger.statuses(), as_json=False, only=dataset_id)


@budget_app.command("show")
def budget_show(
    dataset_id: Annotated[str | None, typer.Argument(help="Only this dataset")] = None,
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Total, spent, reserved and remaining ε per dataset."""
    from federation.node.ledger import PrivacyLedger

    h = _home(home)
    ledger = PrivacyLedger(h.db, h.audit, actor=h.actor)
    _show(ledger.statuses(), as_json=as_json, only=dataset_id)


def _show(statuses: list, *, as_json: bool, only: str | None) -> None:
    rows = [s for s in statuses if only is None or s.dataset_id == only]
    if as_json:
        print_json([s.as_dict() for s in rows])
        return
    table = Table("dataset", "total ε", "spent", "reserved", "remaining", "open runs")
    for s in rows:
        fmt = (lambda v: "—" if v is None else f"{v:.3f}")  # noqa: E731
        table.add_row(s.dataset_id, fmt(s.epsilon_total), fmt(s.epsilon_spent),
                      fmt(s.epsilon_reserved), fmt(s.epsilon_remaining), str(s.active_runs))
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the federation commands to the `tre node` group."""
    app.command("serve")(serve)
    app.add_typer(budget_app, name="budget")
