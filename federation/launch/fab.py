"""The FABs' identity: their shim folders, app ids and hashes (DESIGN §5 "Apps and hashes").

The app hash is Flower's own FAB hash: SHA-256 of the FAB bytes that `flwr build`
/ `flwr run` produce from `federation/launch/fab/` (the build is deterministic: fixed
zip timestamps, sorted files). The portal computes it with `fab_hash()` when it
issues a permit; a node compares what it receives with the same hash of its own
installed copy (`federation.apps.fab.check_fab`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from flwr.cli.build import build_fab_from_disk

FAB_DIR = Path(__file__).resolve().parent / "fab"
FEASIBILITY_FAB_DIR = Path(__file__).resolve().parent / "feasibility_fab"
APP_ID = "tre/tre-train"
FEASIBILITY_APP_ID = "tre/tre-feasibility"


def fab_bytes(app_dir: Path = FAB_DIR) -> bytes:
    """The FAB exactly as `flwr run` builds and ships it."""
    return build_fab_from_disk(Path(app_dir))


def fab_hash(app_dir: Path = FAB_DIR) -> str:
    """SHA-256 (hex) of the FAB: the `app_hash` a permit must carry."""
    return hashlib.sha256(fab_bytes(app_dir)).hexdigest()
