"""`tre audit verify | export`: check the hash chain of a store, an export or the portal.

An auditor can verify independently: `--portal` downloads every row through the API
and recomputes the chain locally instead of trusting the portal's own verdict. With
`--party`, it checks a party's log (`portal`, or a hospital's signed upload) against
the signed checkpoints the portal holds, and `--record` publishes the result.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import typer

from federation.node.portal_client import problem_detail
from tre.cli.common import console, fail, print_json
from tre.cli.login_cmd import bearer_token
from tre.core.audit import (
    AuditEntry,
    VerifyResult,
    canonical_json,
    entries_from_store,
    parse_jsonl,
    verify_entries,
)
from tre.core.checkpoints import (
    Checkpoint,
    CheckpointError,
    PublicKey,
    SignedExport,
    verify_against,
)

app = typer.Typer(no_args_is_help=True)

DbOpt = typer.Option(None, "--db", help="a portal or node DuckDB file")
FileOpt = typer.Option(None, "--file", help="a JSON Lines export")
PortalOpt = typer.Option(None, "--portal", help="portal base URL (needs an auditor token)")
TokenOpt = typer.Option(None, "--token", envvar="TRE_TOKEN", help="bearer token (else `tre login`)")


def _auditor(url: str, token: str | None) -> httpx.Client:
    """An HTTP client of the portal with the auditor's token (else `tre login`'s)."""
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {bearer_token(token)}"},
                        timeout=60)


def _portal_entries(url: str, token: str | None) -> Iterator[AuditEntry]:
    after = 0
    with _auditor(url, token) as http:
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
    if public_key is None:
        fail("--checkpoints needs --public-key: the key of the party that signed them")
    if not path.exists() or not public_key.exists():
        fail(f"no such file: {path if not path.exists() else public_key}")
    try:
        key = _public_key(public_key.read_bytes())
        checkpoints = [Checkpoint(**d) for d in json.loads(path.read_text())]
    except (ValueError, TypeError) as exc:
        fail(f"cannot read the checkpoints or the key: {exc}")
    return _verified(checkpoints, key)


def _public_key(data: bytes) -> PublicKey:
    """A public key in OpenSSH (how nodes enrol theirs) or PEM form."""
    from cryptography.hazmat.primitives import serialization

    if data.startswith((b"ecdsa-", b"ssh-")):
        return serialization.load_ssh_public_key(data)  # type: ignore[return-value]
    return serialization.load_pem_public_key(data)  # type: ignore[return-value]


def _verified(checkpoints: list[Checkpoint], key: PublicKey) -> list[Checkpoint]:
    try:
        return [c.verify(key) for c in checkpoints]
    except CheckpointError as exc:
        fail(str(exc))


def _get(http: httpx.Client, path: str) -> Any:
    resp = http.get(path)
    if resp.status_code != 200:
        fail(f"the portal answered {resp.status_code} for {path}: {problem_detail(resp)}")
    return resp.json()


def _party_log(url: str, token: str | None, party: str
               ) -> tuple[list[AuditEntry], list[Checkpoint]]:
    """A party's log and the checkpoints the portal holds for it, every signature checked
    with the party's key: the portal's own permit key, or the node's enrolled key (a
    node's log is its signed upload, which the portal relays but cannot have edited)."""
    with _auditor(url, token) as http:
        held = [Checkpoint(**c) for c in _get(http, f"/v1/audit/checkpoints/{party}")]
        if party == "portal":
            latest = {c["party"]: c for c in _get(http, "/v1/audit/checkpoints")}
            key = _public_key(latest["portal"]["public_key"].encode())
            entries = list(_portal_entries(url, token))
        else:
            upload = _get(http, f"/v1/audit/nodes/{party}/export")
            if not upload.get("public_key"):
                fail(f"the portal holds no enrolled key for {party}")
            key = _public_key(upload["public_key"].encode())
            try:
                entries = SignedExport(party, upload["jsonl"], upload["signature"]
                                       ).verify(key).entries()
            except CheckpointError as exc:
                fail(str(exc))
            except (ValueError, TypeError) as exc:
                fail(f"the export of {party} is not JSON lines of audit rows: {exc}")
    if not held:
        fail(f"the portal holds no checkpoint of {party}: nothing to check its log against")
    return entries, _verified(held, key)


def _record(url: str, token: str | None, party: str, result: VerifyResult) -> None:
    """Publish the result in the portal's transparency register."""
    body = {"party": party, "ok": result.ok, "rows": result.rows,
            "checkpoint_seq": result.checkpoint_seq, "problem": result.problem}
    with _auditor(url, token) as http:
        resp = http.post("/v1/audit/verifications", json=body)
    if resp.status_code != 201:
        fail(f"the portal did not record the result: {resp.status_code} {problem_detail(resp)}")


@app.command()
def verify(db: Path = DbOpt, file: Path = FileOpt, portal: str = PortalOpt,
           token: str = TokenOpt, as_json: bool = typer.Option(False, "--json"),
           checkpoints: Path = typer.Option(
               None, "--checkpoints", help="JSON list of the party's signed checkpoints: "
               "also catches a cut tail, a rewritten chain or a forked history"),
           public_key: Path = typer.Option(
               None, "--public-key", help="the signing party's public key (PEM or OpenSSH)"),
           party: str = typer.Option(
               None, "--party", help="with --portal: check this party's log (`portal` or a "
               "hospital id, whose node uploaded it) against the checkpoints the portal holds"),
           record: bool = typer.Option(
               False, "--record", help="with --party: publish the result in the portal's "
               "transparency register"),
           ) -> None:
    """Recompute the hash chain (and check it against signed checkpoints); exit 1 and
    name the first bad row, or the checkpoint contradicted, if it is broken."""
    if party is not None:
        if portal is None or db is not None or file is not None or checkpoints is not None:
            fail("--party checks a log the portal holds: give --portal and no --db, --file "
                 "or --checkpoints")
        entries, held = _party_log(portal, token, party)
        result = verify_against(entries, held)
        if record:
            _record(portal, token, party, result)
    elif record:
        fail("--record publishes a remote audit: it needs --portal and --party")
    else:
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
