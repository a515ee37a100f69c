"""`tre node serve` and `tre node budget`: the node's federation side."""

import typer


def register(app: typer.Typer) -> None:
    """Add the federation commands to the `tre node` group."""
