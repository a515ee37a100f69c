"""`tre federation`: run the SuperLink, start governed training runs and follow them."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tre.cli.common import console, fail, print_json

app = typer.Typer(no_args_is_help=True, help="Flower SuperLink and governed training runs.")


@app.command("superlink")
def superlink(
    host: Annotated[str, typer.Option("--host", help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Fleet/Control/Runtime HTTP port")] = 9093,
    insecure: Annotated[bool, typer.Option("--insecure/--tls",
                                           help="Plain HTTP (loopback / development)")] = True,
    database: Annotated[Path | None, typer.Option(
        "--database", help="SuperLink state file [default: in memory]")] = None,
    secure: Annotated[bool, typer.Option(
        "--secure", help="TLS with the certificate of --pki, and SuperNode authentication: "
        "only node keys registered through the portal may connect")] = False,
    pki: Annotated[Path | None, typer.Option(
        "--pki", help="Folder written by `tre federation provision` (ca.crt, superlink.crt, "
        "superlink.key)")] = None,
) -> None:
    """Run the Flower SuperLink in the foreground (Ctrl-C stops it)."""
    from federation.superlink import TLSFiles, start_superlink

    tls = None
    if secure:
        if pki is None:
            fail("--secure needs --pki (see `tre federation provision`)")
        tls = TLSFiles.in_dir(pki)
        missing = [str(p) for p in (tls.ca_cert, tls.cert, tls.key) if not p.is_file()]
        if missing:
            fail(f"missing TLS files: {', '.join(missing)}")
    proc = start_superlink(host, port, insecure=insecure and not secure, database=database,
                           tls=tls, supernode_auth=secure)
    console.print(f"SuperLink on {host}:{port} (pid {proc.pid})")
    try:
        raise typer.Exit(proc.wait())
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGTERM)
        raise typer.Exit(proc.wait()) from None


@app.command("provision")
def provision_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for CA, certificates and keys")],
    hospital: Annotated[list[str] | None, typer.Option(
        "--hospital", help="Hospital id to issue a SuperNode key pair for (repeatable)")] = None,
    host: Annotated[list[str] | None, typer.Option(
        "--host", help="Extra DNS name / IP for the SuperLink certificate (repeatable)")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace existing files")] = False,
) -> None:
    """Create the federation's CA, the SuperLink's certificate and node key pairs."""
    from federation.provision import provision

    p = provision(out, hospital or [], hosts=host or [], force=force)
    print_json({"ca_cert": str(p.ca_cert), "superlink_cert": str(p.superlink_cert),
                "superlink_key": str(p.superlink_key),
                "node_keys": {h: str(k) for h, k in p.node_keys.items()}})


@app.command("app-hash")
def app_hash() -> None:
    """The SHA-256 of the training FAB: what a permit's `app_hash` must be."""
    from federation.apps.fab import APP_ID, fab_hash

    print_json({"app_id": APP_ID, "app_hash": fab_hash()})


def _round_table(ev: dict[str, Any]) -> Table:
    ev_metrics = ev.get("evaluate") or {}
    title = (f"round {ev['round']}  ({ev['seconds']:.1f}s)  "
             + "  ".join(f"{k} {v:.3f}" for k, v in ev_metrics.items()
                         if k in ("auc", "accuracy", "loss") and v is not None))
    table = Table("hospital", "status", "ε so far", "ε reserved", "examples", "train loss",
                  title=title)
    for n in ev.get("nodes", []):
        if n.get("status") == "trained":
            table.add_row(str(n.get("hospital_id")), "trained", f"{n['epsilon']:.3f}",
                          f"{n.get('epsilon_target') or 0:.3f}", str(n.get("num_examples")),
                          f"{n.get('train_loss') or 0:.3f}")
        else:
            table.add_row(str(n.get("hospital_id") or n.get("node_id")),
                          f"[red]{n.get('status', 'refused')}[/]", "", "", "",
                          str(n.get("reason", ""))[:80])
    return table


@app.command("run")
def run(
    permit: Annotated[Path, typer.Option("--permit", help="File holding the signed permit (JWS)",
                                         exists=True, dir_okay=False)],
    results: Annotated[Path, typer.Option("--results", help="Folder for model, report, plot")],
    superlink_addr: Annotated[str, typer.Option("--superlink", help="SuperLink HOST:PORT")
                              ] = "127.0.0.1:9093",
    model: Annotated[str, typer.Option("--model", help="cnn-gn | resnet18-gn | mlp | logreg")
                     ] = "cnn-gn",
    rounds: Annotated[int, typer.Option("--rounds")] = 3,
    local_epochs: Annotated[int, typer.Option("--local-epochs")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 128,
    lr: Annotated[float, typer.Option("--lr")] = 0.5,
    strategy: Annotated[str, typer.Option("--strategy", help="fedavg | fedprox")] = "fedavg",
    proximal_mu: Annotated[float, typer.Option("--proximal-mu")] = 0.01,
    secagg: Annotated[bool, typer.Option("--secagg", help="SecAgg+ (not available, see docs)")
                      ] = False,
    target_epsilon: Annotated[float, typer.Option(
        "--epsilon", help="ε to spend per node [default: the permit's cap]")] = 0.0,
    max_grad_norm: Annotated[float, typer.Option("--max-grad-norm")] = 1.0,
    dataset_id: Annotated[str, typer.Option("--dataset-id", help="when a permit names several "
                                            "datasets at one node")] = "",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds to wait for the end")
                       ] = 6 * 3600,
    insecure: Annotated[bool, typer.Option("--insecure/--tls")] = True,
) -> None:
    """Start a governed DP training run under a permit and stream its progress."""
    from federation.apps.launch import RunError, follow_run, start_run
    from federation.apps.params import RunParams

    try:
        params = RunParams(
            permit=permit.read_text().strip(), model=model, rounds=rounds,
            local_epochs=local_epochs, batch_size=batch_size, lr=lr, strategy=strategy,
            proximal_mu=proximal_mu, secagg=secagg, target_epsilon=target_epsilon,
            max_grad_norm=max_grad_norm, dataset_id=dataset_id, seed=seed,
        )
        params.check()
    except ValueError as exc:
        fail(str(exc))
    if secagg:
        fail("--secagg: the installed Flower offers SecAgg+ only through its legacy workflow, "
             "not with the Message API strategies this app uses")

    def show(ev: dict[str, Any]) -> None:
        if ev["event"] == "start":
            console.print(f"run {ev['run_id']} started: permit {ev['permit'].get('permit_id')}, "
                          f"waiting for {ev['min_nodes']} hospital(s)")
        elif ev["event"] == "round":
            console.print(_round_table(ev))
        elif ev["event"] == "end":
            console.print(f"run ended: [bold]{ev['status']}[/] {ev.get('stop_reason') or ''}")

    try:
        handle = start_run(superlink_addr, params, results, insecure=insecure)
        console.print(f"submitted run {handle.run_id} to {superlink_addr}; "
                      f"results in {handle.results_dir}")
        report = follow_run(handle, show, timeout_s=timeout)
    except RunError as exc:
        fail(str(exc))
    console.print(f"ε per hospital: {report.get('epsilon_per_node')}")
    console.print(f"wrote {results / 'model.pt'}, {results / 'report.json'}, "
                  f"{results / 'report.png'}")
    if report.get("status") != "completed":
        raise typer.Exit(2)
