"""Where the local Keycloak's files live: the distribution cache and the instances.

A module of its own because both the runner (which fills them) and the bootstrap
(which keeps an instance's client secrets beside its database) need them, and
neither should import the other for a path.
"""

from __future__ import annotations

import os
from pathlib import Path

from tre.core.settings import cache_dir


def keycloak_cache_dir() -> Path:
    """Where the zip, the unzipped server and the CLI's instance live."""
    path = cache_dir() / "keycloak"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_data_dir() -> Path:
    """The instance `tre keycloak up` runs (its state file is `state.json` inside).
    `TRE_KEYCLOAK_DATA_DIR` moves it (tests use that to stay off the user's one)."""
    override = os.environ.get("TRE_KEYCLOAK_DATA_DIR")
    if override:
        return Path(override)
    return keycloak_cache_dir() / "instances" / "default"
