"""Consistent snapshots of a DuckDB store, and restores that prove the audit chain intact.

A snapshot is taken under the store's own lock after a CHECKPOINT, so it holds
exactly the committed transactions up to that point; restoring verifies the
snapshot's audit chain before it replaces anything, and swaps files atomically.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from tre.core.audit import VerifyResult, entries_from_store, verify_entries
from tre.core.db import Database


class BackupError(Exception):
    """A snapshot or restore could not be made safely; the message says why."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def snapshot(db: Database, target_dir: Path) -> Path:
    """Copy the live store into `target_dir` while its service keeps running."""
    target_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = target_dir / f"{db.path.stem}-{stamp}.duckdb"
    with db.exclusive():  # no write lands mid-copy
        db.checkpoint_unlocked()
        shutil.copy2(db.path, target)
    return target


def verify_store(path: Path) -> VerifyResult:
    """Verify the audit chain of a store file that no service has open."""
    return verify_entries(entries_from_store(path))


def restore(snapshot_path: Path, target: Path) -> VerifyResult:
    """Replace `target` (its service stopped) by a verified snapshot, atomically."""
    if not snapshot_path.exists():
        raise BackupError(f"no snapshot at {snapshot_path}")
    result = verify_store(snapshot_path)
    if not result.ok:
        raise BackupError(f"snapshot's audit chain is broken at row {result.first_bad_seq}: "
                          f"{result.problem}; nothing restored")
    tmp = target.with_name(target.name + ".restoring")
    shutil.copy2(snapshot_path, tmp)
    wal = target.with_name(target.name + ".wal")
    if wal.exists():
        wal.unlink()
    os.replace(tmp, target)
    after = verify_store(target)
    if not after.ok or after.head_hash != result.head_hash:
        raise BackupError("restored store does not match the snapshot")
    return after
