"""`tre synthetic withdraw`: a steward withdraws a published synthetic release.

When a data subject withdraws consent, the steward who records it can also stop the
synthetic tables built while they were in the cohort from being handed out. The
command calls the portal with the steward's own token (`tre login`, or `--token`),
with the same options as the steward's `tre consent` commands; nodes use
`tre node synthetic withdraw` with their service account instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tre.cli.common import PortalCalls, check_portal_url, console, print_json
from tre.cli.login_cmd import bearer_token

app = typer.Typer(no_args_is_help=True)


@app.command()
def withdraw(
    release_id: Annotated[str, typer.Argument(
        help="The release id the catalogue shows (syn_…).")],
    reason: Annotated[str, typer.Option(
        "--reason", help="Why (researchers see it when a download is refused).")],
    portal: Annotated[str, typer.Option(
        "--portal", envvar="TRE_PORTAL_URL", help="portal base URL")],
    token: Annotated[str | None, typer.Option(
        "--token", envvar="TRE_TOKEN", help="bearer token of a steward (else `tre login`'s)")
    ] = None,
    ca: Annotated[Path | None, typer.Option(
        "--ca", help="CA certificate the portal's TLS certificate chains to [default: the "
        "system's CAs]")] = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="Development only: a plain http URL")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Withdraw a synthetic release: downloads are refused from now on (audited)."""
    check_portal_url(portal, "--portal", allow_http=insecure)
    with PortalCalls(portal, bearer_token(token), verify=str(ca) if ca else True) as calls:
        answer = calls.json("POST", f"/v1/catalogue/synthetic/{release_id}/withdraw",
                            json={"reason": reason})
    if as_json:
        print_json(answer)
    else:
        console.print(f"synthetic release {release_id} of {answer['hospital_id']}/"
                      f"{answer['dataset_id']} withdrawn", highlight=False)
