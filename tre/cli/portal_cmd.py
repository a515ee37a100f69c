"""`tre portal serve | openapi`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


@app.command()
def serve(
    host: str = typer.Option(None, help="interface to listen on (default 127.0.0.1)"),
    port: int = typer.Option(None, help="port (default 8400, env TRE_PORT)"),
    db: Path = typer.Option(None, help="portal DuckDB file (default in the state dir)"),
    state_dir: Path = typer.Option(None, help="where the store and permit keys live"),
    log_json: bool = typer.Option(False, "--log-json",
                                  help="JSON-lines logs, the request log included "
                                       "(also env TRE_LOG_FORMAT=json)"),
    log_level: str = typer.Option("info", "--log-level", envvar="TRE_LOG_LEVEL",
                                  help="debug | info (one line per request) | warning | "
                                       "error"),
    ssl_certfile: Path = typer.Option(None, "--ssl-certfile", envvar="TRE_SSL_CERTFILE",
                                      help="serve HTTPS with this certificate (PEM chain)"),
    ssl_keyfile: Path = typer.Option(None, "--ssl-keyfile", envvar="TRE_SSL_KEYFILE",
                                     help="private key of --ssl-certfile"),
) -> None:
    """Run the portal (API under /v1, OpenAPI at /openapi.json)."""
    import uvicorn

    from tre.core.logging import configure, wants_json

    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise typer.BadParameter("give both --ssl-certfile and --ssl-keyfile, or neither")
    json_lines = wants_json(log_json)
    level = log_level.lower()
    log_config = configure(json_lines=json_lines, level=level)
    # imported once logging is configured: what the portal's libraries warn at import
    # time is logged in the chosen format
    from tre.portal.app import create_app
    from tre.portal.settings import PortalSettings

    overrides = {k: v for k, v in
                 {"host": host, "port": port, "db_path": db, "state_dir": state_dir}.items()
                 if v is not None}
    settings = PortalSettings(**overrides)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=level, log_config=log_config,
                access_log=False,  # tre.portal.access_log has the route and the principal
                ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
                ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None)


@app.command()
def openapi(out: Path = typer.Option(None, "--out", help="write it here instead of stdout"),
            ) -> None:
    """The OpenAPI document: the API's contract (security, problem responses)."""
    from tre.portal.app import create_app
    from tre.portal.settings import PortalSettings

    text = json.dumps(create_app(PortalSettings()).openapi(), indent=2)
    if out is None:
        typer.echo(text)
        return
    out.write_text(text + "\n")
    typer.echo(f"wrote {out}", err=True)
