"""`tre pseudonymiser init | serve`: the pseudonymisation service, run by its own party."""

from __future__ import annotations

from pathlib import Path

import typer

from tre.cli.common import console, fail

app = typer.Typer(no_args_is_help=True)

HOME_OPTION = typer.Option(None, "--home", help="the service's home: its key and audit log "
                           "(default $TRE_PSEUDONYMISER_HOME, else ./pseudonymiser-home)")


@app.command()
def init(home: Path = HOME_OPTION) -> None:
    """Create the home and draw the OPRF key (kept if one is there: a new key would give
    every person a new pseudonym)."""
    from pseudonymisation.home import PseudonymiserHome
    from pseudonymisation.settings import default_home

    try:
        created, is_new = PseudonymiserHome.create(home or default_home())
    except OSError as exc:
        fail(f"cannot create the pseudonymiser home: {exc}")
    state = "created a new OPRF key" if is_new else "kept the existing OPRF key"
    console.print(f"{created.path}: {state} (key id {created.key_id})", highlight=False,
                  soft_wrap=True)
    created.close()


@app.command()
def serve(
    home: Path = HOME_OPTION,
    host: str = typer.Option(None, help="interface to listen on (default 127.0.0.1)"),
    port: int = typer.Option(None, help="port (default 8600)"),
    keycloak_url: str = typer.Option(None, "--keycloak-url",
                                     help="the realm's Keycloak, e.g. https://id.example.org"),
    realm: str = typer.Option(None, "--realm", help="Keycloak realm (default tre)"),
    ssl_certfile: Path = typer.Option(None, "--ssl-certfile",
                                      envvar="TRE_PSEUDONYMISER_SSL_CERTFILE",
                                      help="serve HTTPS with this certificate (PEM chain)"),
    ssl_keyfile: Path = typer.Option(None, "--ssl-keyfile",
                                     envvar="TRE_PSEUDONYMISER_SSL_KEYFILE",
                                     help="private key of --ssl-certfile"),
) -> None:
    """Serve POST /v1/evaluate (node and steward tokens) and GET /v1/health."""
    import uvicorn
    from pydantic import ValidationError

    from pseudonymisation.home import HomeError, PseudonymiserHome
    from pseudonymisation.service import create_app
    from pseudonymisation.settings import PseudonymiserSettings

    if (ssl_certfile is None) != (ssl_keyfile is None):
        fail("give both --ssl-certfile and --ssl-keyfile, or neither")
    overrides = {k: v for k, v in {"home": home, "host": host, "port": port,
                                   "keycloak_url": keycloak_url,
                                   "keycloak_realm": realm}.items() if v is not None}
    try:
        settings = PseudonymiserSettings(**overrides)
        PseudonymiserHome(settings.home).key  # noqa: B018 - fail here, not in the lifespan
    except ValidationError as exc:
        fail(f"invalid settings: {exc.errors()[0]['msg']}")
    except HomeError as exc:
        fail(str(exc))
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level="info", ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
                ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None)
