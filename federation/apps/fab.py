"""The FABs a node accepts: the installed apps behind the hashes a permit pins.

The FABs' identity (shim folders, app ids, `fab_hash`) is `federation.launch.fab`,
which the portal imports too. A node never imports or executes code that arrives in
a FAB (invariant 3). Its runtime (`federation.node.runtime`) computes the hash of the
bytes it received, looks it up among the apps installed here (`installed_apps()`: this
package's own shims, built locally) and runs the installed app object for that hash; a FAB that
carries any file beyond a shim's, or hashes to anything else, is refused before
anything loads (`check_fab`). The hash of the FAB being served is handed to the
app through `running_fab_hash()`, so the permit check compares it with the permit.

Flower's own signed-app verification (`flower-supernode --trusted-entities`) needs
a SuperLink that attaches licence verifications to FABs; the open-source SuperLink
does not, so nodes rely on this check in node-installed code.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from federation.launch.fab import (
    APP_ID,
    FAB_DIR,
    FEASIBILITY_APP_ID,
    FEASIBILITY_FAB_DIR,
    fab_hash,
)

#: The only files a shim FAB holds: its manifest and Flower's content listing.
SHIM_FILES = frozenset({"pyproject.toml", ".info/CONTENT"})

_running: ContextVar[str | None] = ContextVar("running_fab_hash", default=None)


@dataclass(frozen=True)
class InstalledApp:
    """A node-installed app: the shim folder whose FAB names it, and its app objects."""

    app_id: str
    fab_dir: Path
    clientapp: str  # "module:attribute" of this package
    serverapp: str

    def load(self, component: str) -> Any:
        """The app object itself, imported from the installed package (never a FAB)."""
        module, _, attr = getattr(self, component).partition(":")
        return getattr(importlib.import_module(module), attr)


@cache
def installed_apps() -> dict[str, InstalledApp]:
    """The apps this installation serves, by the hash of the FAB built from its own shim."""
    apps = [
        InstalledApp(APP_ID, FAB_DIR, "federation.apps.client:app", "federation.apps.server:app"),
        InstalledApp(FEASIBILITY_APP_ID, FEASIBILITY_FAB_DIR, "federation.apps.feasibility:client",
                     "federation.apps.feasibility:server"),
    ]
    return {fab_hash(a.fab_dir): a for a in apps}


class FabRefused(Exception):
    """A FAB that will not run here; `code` is stable, `files` lists what it carried."""

    def __init__(self, code: str, reason: str, *, fab_hash: str, files: list[str]) -> None:
        super().__init__(f"[{code}] {reason}")
        self.code, self.reason, self.fab_hash, self.files = code, reason, fab_hash, files


def check_fab(content: bytes) -> tuple[str, InstalledApp]:
    """The installed app a received FAB stands for, or FabRefused. Nothing is unpacked,
    imported or installed: the bytes are hashed and their zip listing read."""
    digest = hashlib.sha256(content).hexdigest()
    try:
        files = sorted(zipfile.ZipFile(io.BytesIO(content)).namelist())
    except zipfile.BadZipFile as exc:
        raise FabRefused("fab-unreadable", f"the FAB is not a zip archive: {exc}",
                         fab_hash=digest, files=[]) from exc
    extra = [f for f in files if f not in SHIM_FILES]
    if extra:
        shown = ", ".join(extra[:5]) + (" …" if len(extra) > 5 else "")
        raise FabRefused("fab-carries-code", f"the FAB carries files of its own ({shown}); "
                         "only the apps installed here run here", fab_hash=digest, files=files)
    app = installed_apps().get(digest)
    if app is None:
        raise FabRefused("app-not-approved", f"FAB {digest[:12]}… is not an app installed "
                         "here (the installed apps' FABs hash to "
                         f"{', '.join(h[:12] + '…' for h in installed_apps())})",
                         fab_hash=digest, files=files)
    return digest, app


@contextmanager
def serving_fab(digest: str) -> Iterator[None]:
    """Mark the FAB hash the runtime verified for the message being handled."""
    token = _running.set(digest)
    try:
        yield
    finally:
        _running.reset(token)


def running_fab_hash() -> str | None:
    """Hash of the FAB the node runtime verified for the current message (None outside)."""
    return _running.get()
