"""`tre federation`: provision the federation's keys and run its SuperLink.

Runs are started by the portal only (it issues the nodes' run tickets): there is
no command here that submits one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tre.cli.common import check_portal_url, console, fail, print_json, supervise

app = typer.Typer(no_args_is_help=True, help="Flower SuperLink and the federation's keys.")


@app.command("superlink")
def superlink(
    host: Annotated[str, typer.Option(
        "--host", help="Address of the Fleet gateway: the one address hospitals dial")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Fleet gateway port")] = 9092,
    control_host: Annotated[str, typer.Option(
        "--control-host", help="Address of the SuperLink itself (Control and Runtime APIs): "
        "loopback, or a private network only the portal reaches")] = "127.0.0.1",
    control_port: Annotated[int, typer.Option("--control-port", help="Control API port")
                            ] = 9093,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", help="The SuperLink's own folder [default: ./superlink]")] = None,
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
    portal_url: Annotated[str, typer.Option(
        "--portal-url", envvar="TRE_PORTAL_URL",
        help="The portal this SuperLink serves: runs send their results there, and only "
        "there (https; plain http only with --insecure)")] = "",
    portal_ca: Annotated[Path | None, typer.Option(
        "--portal-ca", help="CA certificate the portal's TLS certificate must chain to "
        "[default: the system's]")] = None,
) -> None:
    """Run the SuperLink, its Fleet gateway and the approved-ServerApp runtime in the
    foreground (Ctrl-C or SIGTERM stops all of them)."""
    from federation.superlink import TLSFiles, report_public_key, start_superlink

    tls = None
    if secure:
        if pki is None:
            fail("--secure needs --pki (see `tre federation provision`)")
        tls = TLSFiles.in_dir(pki)
        missing = [str(p) for p in (tls.ca_cert, tls.cert, tls.key) if not p.is_file()]
        if missing:
            fail(f"missing TLS files: {', '.join(missing)}")
    if control_host == host and control_port == port:
        fail("--control-host:--control-port must differ from the published --host:--port")
    check_portal_url(portal_url, "--portal-url", allow_http=insecure and not secure)
    if portal_ca is not None and not portal_ca.is_file():
        fail(f"--portal-ca {portal_ca} is not a file")
    home = (state_dir or Path("superlink")).resolve()
    proc = start_superlink(host, port, control_host=control_host, control_port=control_port,
                           insecure=insecure and not secure, database=database, tls=tls,
                           supernode_auth=secure, portal_url=portal_url, portal_ca=portal_ca,
                           flwr_home=home)
    console.print(f"Fleet gateway on {host}:{port} (hospitals dial this); SuperLink and its "
                  f"Control API on {control_host}:{control_port} (the portal's address); "
                  f"results to {portal_url}; pid {proc.pid}")
    console.print(f"report key (give it to the portal as TRE_SUPERLINK_REPORT_KEY): "
                  f"{report_public_key(home)}")
    supervise(proc)


@app.command("report-key")
def report_key(
    state_dir: Annotated[Path, typer.Option(
        "--state-dir", help="The SuperLink's own folder [default: ./superlink]")
    ] = Path("superlink"),
) -> None:
    """Print the SuperLink's report key (created on first use in its state folder): the
    portal seals each run's results credential to it (TRE_SUPERLINK_REPORT_KEY)."""
    from federation.superlink import report_public_key

    typer.echo(report_public_key(state_dir.resolve()))


@app.command("provision")
def provision_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for CA, certificates and keys")],
    hospital: Annotated[list[str] | None, typer.Option(
        "--hospital", help="Hospital id to issue a SuperNode key pair for (repeatable)")] = None,
    host: Annotated[list[str] | None, typer.Option(
        "--host", help="Extra DNS name / IP for the SuperLink certificate (repeatable)")] = None,
    portal_host: Annotated[list[str] | None, typer.Option(
        "--portal-host", help="Extra DNS name / IP for the portal's certificate (repeatable)")
    ] = None,
    pseudonymiser_host: Annotated[list[str] | None, typer.Option(
        "--pseudonymiser-host",
        help="Extra DNS name / IP for the pseudonymisation service's certificate (repeatable)")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace existing files")] = False,
) -> None:
    """Create the federation's CA, the SuperLink's, the portal's and the pseudonymisation
    service's certificates and node key pairs."""
    from federation.provision import provision

    p = provision(out, hospital or [], hosts=host or [], portal_hosts=portal_host or [],
                  pseudonymiser_hosts=pseudonymiser_host or [], force=force)
    print_json({"ca_cert": str(p.ca_cert), "superlink_cert": str(p.superlink_cert),
                "superlink_key": str(p.superlink_key), "portal_cert": str(p.portal_cert),
                "portal_key": str(p.portal_key), "pseudonymiser_cert": str(p.pseudonymiser_cert),
                "pseudonymiser_key": str(p.pseudonymiser_key),
                "node_keys": {h: str(k) for h, k in p.node_keys.items()}})


@app.command("app-hash")
def app_hash() -> None:
    """The SHA-256 of the training FAB: what a permit's `app_hash` must be."""
    from federation.launch.fab import APP_ID, fab_hash

    print_json({"app_id": APP_ID, "app_hash": fab_hash()})


