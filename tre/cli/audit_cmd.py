"""`tre audit verify | export`: check the hash chain of a store, an export or the portal.

An auditor can verify independently: `--portal` downloads every row through the API
and recomputes the chain locally instead of trusting the portal's own verdict.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import typer

from tre.cli.common import console, fail, print_json
from tre.core.audit import (
    AuditEntry,
    canonical_json,
    entries_from_store,
    parse_jsonl,
    verify_entries,
)

app = typer.Typer(no_args_is_help=True)

DbOpt = typer.Option(None, "--db", help="a portal or node DuckDB file")
FileOpt = typer.Option(None, "--file", help="a JSON Lines export")
PortalOpt = typer.Option(None, "--portal", help="portal base URL (needs an auditor token)")
TokenOpt = typer.Option(None, "--token", envvar="TRE_TOKEN", help="bearer token (else `tre login`)")


def _portal_entries(url: str, token: str | None) -> Iterator[AuditEntry]:
    if token is None:
        from tre.cli.login_cmd import access_token

        token = access_token()
    after = 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                      timeout=30) as http:
        while True:
            resp = http.get("/v1/audit", params={"after": after, "limit": 1000})
            if resp.status_code != 200:
                fail(f"portal answered {resp.status_code}: {resp.text[:200]}")
            page = resp.json()
            for row in page["entries"]:
                yield AuditEntry(**row)
            if page["next_after"] is None:
                return
            after = page["next_after"]


def _entries(db: Path | None, file: Path | None, portal: str | None,
             token: str | None) -> list[AuditEntry]:
    if sum(x is not None for x in (db, file, portal)) != 1:
        fail("give exactly one of --db, --file or --portal")
    if db is not None:
        if not db.exists():
            fail(f"no such store: {db}")
        return entries_from_store(db)
    if file is not None:
        if not file.exists():
            fail(f"no such export: {file}")
        with file.open() as f:
            return list(parse_jsonl(f))
    return list(_portal_entries(portal, token))


@app.command()
def verify(db: Path = DbOpt, file: Path = FileOpt, portal: str = PortalOpt,
           token: str = TokenOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """Recompute the hash chain; exit 1 and name the first bad row if it is broken."""
    result = verify_entries(_entries(db, file, portal, token))
    if as_json:
        print_json(result.as_dict())
    elif result.ok:
        console.print(f"[green]audit chain intact[/]: {result.rows} rows, head {result.head_hash}")
    else:
        console.print(f"[red]audit chain broken[/] at row {result.first_bad_seq}: "
                      f"{result.problem}")
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def export(db: Path = DbOpt, file: Path = FileOpt, portal: str = PortalOpt,
           token: str = TokenOpt) -> None:
    """Write the log as JSON Lines on stdout (verify it later with `--file`)."""
    for entry in _entries(db, file, portal, token):
        typer.echo(canonical_json(entry.as_dict()))
