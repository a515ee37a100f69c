"""The training FAB and its hash: what a permit pins (DESIGN §5 "Apps and hashes").

The app hash is Flower's own FAB hash: SHA-256 of the FAB bytes that `flwr build`
/ `flwr run` produce from `federation/apps/fab/` (the build is deterministic: fixed
zip timestamps, sorted files). The portal computes it with `fab_hash()` when it
issues a permit; a node recomputes it from the FAB Flower actually installed for
the running message (`running_fab_hash()`) and refuses anything else.

Flower's own signed-app verification (`flower-supernode --trusted-entities`) needs
a SuperLink that attaches licence verifications to FABs; the open-source SuperLink
does not, so nodes rely on this hash check in node-installed code.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from flwr.cli.build import build_fab_from_disk
from flwr.common.constant import FAB_HASH_TRUNCATION

FAB_DIR = Path(__file__).resolve().parent / "fab"
APP_ID = "tre/tre-train"


def fab_bytes(app_dir: Path = FAB_DIR) -> bytes:
    """The FAB exactly as `flwr run` builds and ships it."""
    return build_fab_from_disk(Path(app_dir))


def fab_hash(app_dir: Path = FAB_DIR) -> str:
    """SHA-256 (hex) of the FAB: the `app_hash` a permit must carry."""
    return hashlib.sha256(fab_bytes(app_dir)).hexdigest()


def installed_app_dir() -> Path | None:
    """The folder Flower installed the running message's FAB into (it is put on sys.path
    by Flower's app loader; one ClientApp process serves one message of one run)."""
    from flwr.supercore.utils import get_flwr_home

    apps = (get_flwr_home() / "apps").resolve()
    for entry in sys.path:
        p = Path(entry).resolve() if entry else None
        if p is not None and p.parent == apps and (p / "pyproject.toml").is_file():
            return p
    return None


def running_fab_hash() -> str | None:
    """Hash of the FAB this process was started for, recomputed from its installed files.

    Rebuilding the installed files reproduces the shipped FAB byte for byte; the
    install folder's name carries the first characters of the hash Flower computed on
    the received bytes, which must agree. None when not running under a SuperNode.
    """
    app_dir = installed_app_dir()
    if app_dir is None:
        return None
    digest = fab_hash(app_dir)
    if not app_dir.name.endswith("." + digest[:FAB_HASH_TRUNCATION]):
        return None
    return digest
