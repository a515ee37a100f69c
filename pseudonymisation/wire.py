"""The wire form of group elements, shared by the service and its client: base64url."""

from __future__ import annotations

import base64
import re

from pseudonymisation import oprf

_ELEMENT_B64 = re.compile(r"[A-Za-z0-9_-]{43}=?")


def encode(element: bytes) -> str:
    """base64url without padding (43 characters for 32 bytes)."""
    return base64.urlsafe_b64encode(element).rstrip(b"=").decode()


def decode(text: object) -> bytes:
    """The element a wire string encodes, checked (OprfError names what is wrong)."""
    if not isinstance(text, str) or not _ELEMENT_B64.fullmatch(text):
        raise oprf.OprfError("not the base64url encoding of a 32-byte element")
    return oprf.check_element(base64.urlsafe_b64decode(text.rstrip("=") + "="))
