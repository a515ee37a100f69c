"""`tre audit verify | export`: check the hash chain of a store, an export or the portal.

An auditor can verify independently: `--portal` downloads every row through the API
and recomputes the chain locally instead of trusting the portal's own verdict.
"""

from __future__ import annotations

import json
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
from tre.core.checkpoints import Checkpoint, CheckpointError, verify_against

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


def _checkpoints(path: Path, public_key: Path | None) -> list[Checkpoint]:
    """Checkpoints from a JSON list, each signature checked with the party's public key
    (PEM or OpenSSH): a checkpoint nobody can vouch for proves nothing."""
    from cryptography.hazmat.primitives import serialization

    if public_key is None:
        fail("--checkpoints needs --public-key: the key of the party that signed them")
    if not path.exists() or not public_key.exists():
        fail(f"no such file: {path if not path.exists() else public_key}")
    data = public_key.read_bytes()
    try:
        key = (serialization.load_ssh_public_key(data) if data.startswith(b"ecdsa-")
               or data.startswith(b"ssh-") else serialization.load_pem_public_key(data))
        docs = json.loads(path.read_text())
        checkpoints = [Checkpoint(**d) for d in docs]
    except (ValueError, TypeError) as exc:
        fail(f"cannot read the checkpoints or the key: {exc}")
    try:
        return [c.verify(key) for c in checkpoints]  # type: ignore[arg-type]
    except CheckpointError as exc:
        fail(str(exc))


@app.command()
def verify(db: Path = DbOpt, file: Path = FileOpt, portal: str = PortalOpt,
           token: str = TokenOpt, as_json: bool = typer.Option(False, "--json"),
           checkpoints: Path = typer.Option(
               None, "--checkpoints", help="JSON list of the party's signed checkpoints: "
               "also catches a cut tail, a rewritten chain or a forked history"),
           public_key: Path = typer.Option(
               None, "--public-key", help="the signing party's public key (PEM or OpenSSH)"),
           ) -> None:
    """Recompute the hash chain (and check it against signed checkpoints); exit 1 and
    name the first bad row, or the checkpoint contradicted, if it is broken."""
    entries = _entries(db, file, portal, token)
    result = (verify_against(entries, _checkpoints(checkpoints, public_key))
              if checkpoints is not None else verify_entries(entries))
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
