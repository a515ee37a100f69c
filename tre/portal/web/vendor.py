"""The JavaScript libraries the portal's pages import, fetched from the npm registry.

Security code written by hand is a liability: the steward's page (static/pseudonymise.js)
runs the RFC 9497 OPRF client of `@noble/curves` (audited, pure-JS ESM, ristretto255
with hash-to-group) instead of its own group arithmetic. The tarballs are pinned by
version and by the registry's published `dist.integrity` (SHA-512), unpacked into the
git-ignored `static/vendor/`, and served from the portal itself, so the pages'
Content-Security-Policy stays `'self'`. `scripts/ensure-venv` runs this module
(`python -m tre.portal.web.vendor`); without it the portal warns at start and the
identifier widget says the library is missing.

A browser resolves no bare module specifier (`@noble/hashes/sha2.js`) without an import
map, and an inline import map would need the CSP loosened; so unpacking rewrites each
such specifier into a relative path within `static/vendor/`, the only change made to
the verified files.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import os
import posixpath
import re
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from tre.core.locks import file_lock
from tre.portal.web.pages import STATIC

VENDOR = STATIC / "vendor"
REGISTRY = "https://registry.npmjs.org"
MARKER = ".tre-verified"


@dataclass(frozen=True)
class NpmPackage:
    """One pinned npm tarball; `integrity` is the registry's `dist.integrity`."""

    name: str
    version: str
    integrity: str

    @property
    def url(self) -> str:
        return f"{REGISTRY}/{self.name}/-/{self.name.rsplit('/', 1)[-1]}-{self.version}.tgz"

    @property
    def folder(self) -> Path:
        return VENDOR / self.name


PACKAGES = (
    NpmPackage("@noble/curves", "2.4.0", "sha512-P4/62zrgfH33CneE3Dn4WhJVA22YUU0eR51wKIan4NVR"
               "vwsA0YnPTwWGpNbpuacSujmSFLvyzpyuR30+fbq2Ew=="),
    NpmPackage("@noble/hashes", "2.4.0", "sha512-X5XaVWZIBCT7HHZGm5I7ZQXDwLG+bGXuSrMQAW+7Zvl8"
               "7h1kmc1ZB1VSRJcpUfoUrGQp4Fkoxm5kZ+Ms+aW+eA=="),
)
_SPECIFIER = re.compile(r"""(\bfrom\s*)(['"])(@noble/(?:curves|hashes)/[^'"]+)\2""")


class VendorError(RuntimeError):
    """A library could not be fetched or did not match its pin; the message says which."""


def missing() -> list[str]:
    """`name@version` of every pinned library not (or not completely) unpacked."""
    return [f"{p.name}@{p.version}" for p in PACKAGES if not _verified(p)]


def ensure(*, timeout_s: float = 60.0) -> None:
    """Fetch, verify and unpack every pinned library not already in place (idempotent)."""
    with file_lock(VENDOR / ".lock"):
        for package in PACKAGES:
            if not _verified(package):
                unpack(package, _download(package, timeout_s))


def _verified(package: NpmPackage) -> bool:
    marker = package.folder / MARKER
    return marker.is_file() and marker.read_text().strip() == package.integrity


def _download(package: NpmPackage, timeout_s: float) -> bytes:
    try:
        resp = httpx.get(package.url, timeout=timeout_s, follow_redirects=True)
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        raise VendorError(f"cannot fetch {package.name}@{package.version} from "
                          f"{package.url}: {exc}") from exc
    return check_integrity(package, resp.content)


def check_integrity(package: NpmPackage, tarball: bytes) -> bytes:
    """`tarball` if its digest is the pinned `dist.integrity`, else a VendorError."""
    algorithm, _, expected = package.integrity.partition("-")
    actual = base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode()
    if not hmac.compare_digest(actual, expected):
        raise VendorError(f"{package.url} does not match the integrity pinned in "
                          f"tre/portal/web/vendor.py ({algorithm} {actual[:16]}… is not "
                          f"{expected[:16]}…): refusing it")
    return tarball


def unpack(package: NpmPackage, tarball: bytes) -> None:
    """The package's ES modules, LICENSE and package.json (not its TypeScript sources),
    written beside the folder and renamed into place, so a half-written one never
    passes for complete."""
    VENDOR.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=VENDOR))
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
            for member in tar.getmembers():
                path = posixpath.normpath(member.name)
                if not member.isfile() or not path.startswith("package/"):
                    continue
                inner = path.removeprefix("package/")
                if inner.startswith(("src/", "../")) or not (
                        inner.endswith(".js") or inner in ("LICENSE", "package.json")):
                    continue
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                if inner.endswith(".js"):
                    data = _relative_imports(data.decode(), package.name, inner).encode()
                out = tmp / inner
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
        if not (tmp / "package.json").is_file():
            raise VendorError(f"{package.url} is not an npm package (no package.json)")
        (tmp / MARKER).write_text(package.integrity + "\n")
        package.folder.parent.mkdir(parents=True, exist_ok=True)
        if package.folder.exists():
            shutil.rmtree(package.folder)
        os.replace(tmp, package.folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _relative_imports(source: str, name: str, inner: str) -> str:
    """`from '@noble/hashes/x.js'` → `from '../../@noble/hashes/x.js'` as seen from the
    module at `<name>/<inner>` under static/vendor/."""
    here = posixpath.dirname(posixpath.join(name, inner))

    def relative(match: re.Match[str]) -> str:
        path = posixpath.relpath(match[3], here)
        return f"{match[1]}{match[2]}{path if path.startswith('../') else './' + path}{match[2]}"
    return _SPECIFIER.sub(relative, source)


if __name__ == "__main__":
    try:
        ensure()
    except VendorError as exc:
        sys.exit(f"[setup] {exc}")
