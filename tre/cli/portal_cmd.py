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
) -> None:
    """Run the portal (API under /v1, OpenAPI at /openapi.json)."""
    import uvicorn

    from tre.portal.app import create_app
    from tre.portal.settings import PortalSettings

    overrides = {k: v for k, v in
                 {"host": host, "port": port, "db_path": db, "state_dir": state_dir}.items()
                 if v is not None}
    settings = PortalSettings(**overrides)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level="warning")


@app.command()
def openapi() -> None:
    """Print the OpenAPI document."""
    from tre.portal.app import create_app
    from tre.portal.settings import PortalSettings

    typer.echo(json.dumps(create_app(PortalSettings()).openapi(), indent=2))
