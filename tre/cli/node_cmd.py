"""`tre node` commands."""

import typer

app = typer.Typer(no_args_is_help=True, help="node commands")
