"""`tre backup` and `tre restore`: consistent snapshots of portal and node stores."""

from __future__ import annotations

from pathlib import Path

import duckdb
import httpx
import typer

from tre.cli.common import console, fail, print_json
from tre.core.backup import BackupError, restore, sha256_file, snapshot
from tre.core.db import Database


def backup(
    portal: str = typer.Option(None, "--portal", help="running portal's URL (admin token)"),
    db: Path = typer.Option(None, "--db", help="a store file (a node's node.duckdb)"),
    out: Path = typer.Option(Path("backups"), "--out", help="folder for --db snapshots"),
    token: str = typer.Option(None, "--token", envvar="TRE_TOKEN"),
) -> None:
    """Snapshot a store while its service keeps running."""
    if (portal is None) == (db is None):
        fail("give exactly one of --portal or --db")
    if portal is not None:
        if token is None:
            from tre.cli.login_cmd import access_token

            token = access_token()
        resp = httpx.post(f"{portal.rstrip('/')}/v1/admin/backup",
                          headers={"Authorization": f"Bearer {token}"}, timeout=120)
        if resp.status_code != 200:
            fail(f"portal refused the backup ({resp.status_code}): {resp.text[:200]}")
        print_json(resp.json())
        return
    if not db.exists():
        fail(f"no store at {db}")
    try:
        database = Database(db)
    except duckdb.IOException as exc:
        fail(f"{db} is held by a running service ({exc}); back it up through that service")
    try:
        path = snapshot(database, out)
    finally:
        database.close()
    print_json({"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size})


def restore_cmd(
    snapshot_path: Path = typer.Argument(..., help="a snapshot made by `tre backup`"),
    db: Path = typer.Option(..., "--db", help="the store to replace (its service stopped)"),
) -> None:
    """Replace a store by a snapshot whose audit chain verifies."""
    try:
        result = restore(snapshot_path, db)
    except (BackupError, duckdb.Error) as exc:
        fail(str(exc))
    console.print(f"[green]restored[/] {db} from {snapshot_path}: audit chain intact, "
                  f"{result.rows} rows, head {result.head_hash}")
