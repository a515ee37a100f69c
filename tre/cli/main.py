"""Entry point of the `tre` command."""

from __future__ import annotations

import typer

from tre.cli import (
    audit_cmd,
    consent_cmd,
    demo_cmd,
    federation_cmd,
    keycloak_cmd,
    login_cmd,
    node_cmd,
    node_federation_cmd,
    ops_cmd,
    portal_cmd,
    pseudonymiser_cmd,
    synthetic_cmd,
)

app = typer.Typer(
    no_args_is_help=True,
    help="Federated trusted research environment for health data.",
    pretty_exceptions_show_locals=False,
)
app.add_typer(keycloak_cmd.app, name="keycloak", help="Run and configure the local Keycloak.")
app.add_typer(portal_cmd.app, name="portal", help="Run the portal (API and web UI).")
app.add_typer(pseudonymiser_cmd.app, name="pseudonymiser",
              help="Run the pseudonymisation service (OPRF, a trusted third party).")
app.add_typer(audit_cmd.app, name="audit", help="Verify and export the audit trail.")
app.add_typer(consent_cmd.app, name="consent",
              help="Record and withdraw consent by a person's identifier (stewards).")
node_federation_cmd.register(node_cmd.app)
app.add_typer(node_cmd.app, name="node", help="Operate a hospital federation node.")
app.command("login")(login_cmd.login)
app.command("demo")(demo_cmd.demo)
app.command("backup")(ops_cmd.backup)
app.command("restore")(ops_cmd.restore_cmd)
app.add_typer(federation_cmd.app, name="federation", help="Flower SuperLink and runs.")
app.add_typer(synthetic_cmd.app, name="synthetic", help="Withdraw published synthetic data.")

if __name__ == "__main__":
    app()
