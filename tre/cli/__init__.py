"""The `tre` command: one Typer app with a sub-command per kind of user."""
