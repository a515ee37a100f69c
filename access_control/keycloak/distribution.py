"""The Keycloak distribution: fetched from Maven Central, checked against the SHA-512
published beside it and against one pinned here, and unzipped once into the user cache.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx

from access_control.keycloak.errors import ChecksumError, DownloadError, KeycloakError
from access_control.keycloak.paths import keycloak_cache_dir
from tre.core.locks import file_lock

KEYCLOAK_VERSION = "26.7.3"
MAVEN_BASE = "https://repo1.maven.org/maven2/org/keycloak/keycloak-quarkus-dist"
#: SHA-512 of the distribution zips we have checked by hand; a download must match
#: both this and Maven Central's published `.sha512`.
PINNED_SHA512: dict[str, str] = {
    "26.7.3": (
        "15c764765576eef267cf15cc5225a5826b5394a25a83d9bfa5b8544e4bbba690"
        "cb743c9d384200b93bb71ee4c4a328e1dd8c0a00f822fd3e6e154f14b1e47216"
    ),
}

Progress = Callable[[int, int | None], None]
"""Download progress callback: (bytes so far, total bytes or None)."""


def distribution_url(version: str = KEYCLOAK_VERSION) -> str:
    return f"{MAVEN_BASE}/{version}/keycloak-quarkus-dist-{version}.zip"


# ---------------------------------------------------------------- download, verify


def sha512_of(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: Path, expected: str, *, source: str = "pinned") -> None:
    """Raise ChecksumError unless the file's SHA-512 is `expected` (from `source`)."""
    actual = sha512_of(path)
    if actual.lower() != expected.strip().lower():
        raise ChecksumError(
            f"checksum mismatch for {path}: SHA-512 is {actual[:16]}…, the {source} "
            f"SHA-512 is {expected.strip()[:16]}…; the file is corrupt or not the "
            "published one (delete it and retry)"
        )


def published_sha512(version: str = KEYCLOAK_VERSION, *, timeout: float = 30) -> str:
    """The `.sha512` Maven Central serves beside the zip."""
    url = distribution_url(version) + ".sha512"
    try:
        resp = httpx.get(url, timeout=timeout, follow_redirects=True)
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        raise DownloadError(f"cannot fetch the checksum {url}: {exc}") from exc
    value = resp.text.split()[0].lower() if resp.text.split() else ""
    if not re.fullmatch(r"[0-9a-f]{128}", value):
        raise DownloadError(f"{url} did not return a SHA-512 checksum")
    return value


def download_distribution(
    version: str = KEYCLOAK_VERSION,
    *,
    dest_dir: Path | None = None,
    progress: Progress | None = None,
    timeout: float = 60,
) -> Path:
    """Download the zip to `<dest>/<name>.part`, verify it, then rename it into place
    (so an interrupted download never passes for a complete one)."""
    dest_dir = dest_dir or keycloak_cache_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    url = distribution_url(version)
    target = dest_dir / url.rsplit("/", 1)[1]
    published = published_sha512(version)
    pinned = PINNED_SHA512.get(version)
    if pinned and pinned != published:
        raise ChecksumError(
            f"Maven Central's SHA-512 for Keycloak {version} differs from the one pinned in "
            "access_control/keycloak/distribution.py; refusing to download"
        )
    part = target.with_name(target.name + ".part")
    digest = hashlib.sha512()
    try:
        with httpx.stream(
            "GET", url, follow_redirects=True, timeout=httpx.Timeout(timeout)
        ) as resp:
            resp.raise_for_status()
            total = int(resp.headers.get("content-length") or 0) or None
            done = 0
            with open(part, "wb") as fh:
                for chunk in resp.iter_bytes(1 << 20):
                    fh.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
    except (httpx.HTTPError, OSError) as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"cannot download Keycloak {version} from {url}: {exc} "
            f"(check the network, or put the zip at {target})"
        ) from exc
    if digest.hexdigest() != published:
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"the download of {url} does not match its published SHA-512; try again"
        )
    os.replace(part, target)
    return target


def ensure_distribution(
    version: str = KEYCLOAK_VERSION, *, progress: Progress | None = None
) -> Path:
    """The unzipped server for `version`, downloading and verifying it on first use."""
    root = keycloak_cache_dir()
    dist = root / f"keycloak-{version}"
    marker = dist / ".tre-verified"
    if marker.exists():
        return dist
    with file_lock(root / ".lock"):
        if marker.exists():
            return dist
        zip_path = root / f"keycloak-quarkus-dist-{version}.zip"
        if zip_path.exists():
            expected = PINNED_SHA512.get(version)
            source = "pinned"
            if expected is None:
                expected, source = published_sha512(version), "published"
            try:
                verify_checksum(zip_path, expected, source=source)
            except ChecksumError:
                zip_path.unlink()  # a corrupt cache: fetch it again, once
                zip_path = download_distribution(version, dest_dir=root, progress=progress)
        else:
            zip_path = download_distribution(version, dest_dir=root, progress=progress)
            if version in PINNED_SHA512:
                verify_checksum(zip_path, PINNED_SHA512[version])
        _extract(zip_path, dist)
        return dist


def _extract(zip_path: Path, dist: Path) -> None:
    """Unzip into a temporary folder and rename, keeping the Unix modes (kc.sh must be
    executable, which `zipfile` alone does not preserve)."""
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dist.parent))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():
                out = Path(zf.extract(info, tmp))
                mode = (info.external_attr >> 16) & 0o777
                if mode and not info.is_dir():
                    out.chmod(mode)
        tops = [p for p in tmp.iterdir() if p.is_dir()]
        if len(tops) != 1 or not (tops[0] / "bin" / "kc.sh").exists():
            raise KeycloakError(f"{zip_path} is not a Keycloak distribution")
        (tops[0] / ".tre-verified").write_text(sha512_of(zip_path) + "\n")
        if dist.exists():
            shutil.rmtree(dist)
        os.replace(tops[0], dist)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
