"""The node's TLS context for the portal is built once per process and CA file version
(loading a CA bundle costs more CPU than a small portal call)."""

from __future__ import annotations

import os
import shutil
import ssl

import certifi
import pytest

from federation.node.portal_client import tls_context


def test_one_context_per_ca_file_version(tmp_path):
    ca = tmp_path / "portal-ca.pem"
    shutil.copy(certifi.where(), ca)
    first = tls_context(str(ca))
    assert isinstance(first, ssl.SSLContext) and first.verify_mode == ssl.CERT_REQUIRED
    assert tls_context(str(ca)) is first
    stat = ca.stat()
    os.utime(ca, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a new CA file
    assert tls_context(str(ca)) is not first
    assert tls_context(True) is tls_context(True) and tls_context(True) is not first
    assert tls_context(False).verify_mode == ssl.CERT_NONE  # an --insecure home


def test_a_missing_ca_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        tls_context(str(tmp_path / "absent.pem"))
