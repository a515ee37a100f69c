"""`tre portal` commands."""

import typer

app = typer.Typer(no_args_is_help=True, help="portal commands")
