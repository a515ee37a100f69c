"""Settings shared by every service: where data and caches live, where Keycloak is.

Each service has one settings object (pydantic-settings, env prefix `TRE_`) that
extends `CommonSettings`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from platformdirs import user_cache_dir, user_config_dir
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """User cache dir of the project (Keycloak distribution, venv, demo state)."""
    path = Path(user_cache_dir("tre"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_dir() -> Path:
    path = Path(user_config_dir("tre"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_data_root() -> Path:
    """`../shared/data` beside the checkout (read in place, never copied); for a clone of
    a checkout on this machine made elsewhere (CI's fresh clone in a temporary folder),
    the one beside the checkout it was cloned from. `TRE_DATA_ROOT` overrides both."""
    beside = REPO_ROOT.parent / "shared" / "data"
    if beside.is_dir():
        return beside
    origin = subprocess.run(["git", "-C", str(REPO_ROOT), "config", "--get",
                             "remote.origin.url"], capture_output=True, text=True,
                            check=False).stdout.strip()
    cloned_from = Path(origin).parent / "shared" / "data" if origin.startswith("/") else None
    return cloned_from if cloned_from is not None and cloned_from.is_dir() else beside


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRE_", extra="ignore")

    data_root: Path = default_data_root()
    keycloak_url: str = "http://127.0.0.1:8180"
    keycloak_realm: str = "tre"
    portal_audience: str = "tre-portal"
