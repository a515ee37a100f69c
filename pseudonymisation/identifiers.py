"""Person identifiers as the client normalises them before anything is blinded.

The service never sees an identifier, so it cannot check one: every party checks and
normalises on its own side, the same way, or the same person would get two
pseudonyms (a space in a NIR, a lower-case Corsican département). Only known systems
are accepted: a typo in a system URI would otherwise silently create a new person.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
INS_NIA = "urn:oid:1.2.250.1.213.1.4.9"
NHS_NUMBER = "https://fhir.nhs.uk/Id/nhs-number"
TEST_PERSON = "urn:tre:test-person"

PSEUDONYM_PREFIX = "ps_"
PSEUDONYM_HEX_CHARS = 32
# Domain separation of the OPRF input: a future encoding gets another label, not a collision
_INPUT_LABEL = b"tre-person-identifier-v1"

_NIR = re.compile(r"[1-8][0-9]{4}(?:[0-9]{2}|2A|2B)[0-9]{8}")
_CORSICA = {"2A": "19", "2B": "18"}
_NHS = re.compile(r"[0-9]{10}")
_TEST = re.compile(r"[A-Za-z0-9._-]{1,64}")


class IdentifierError(ValueError):
    """An identifier that cannot be pseudonymised; the message names the problem."""


def _french_ins(label: str) -> Callable[[str], str]:
    """INS-NIR / INS-NIA: 13 characters and a 2-digit key = 97 − (number mod 97), where
    Corsica's départements 2A and 2B count as 19 and 18."""

    def normalise(value: str) -> str:
        compact = "".join(value.split()).upper()
        if not _NIR.fullmatch(compact):
            raise IdentifierError(
                f"{label} must be 13 characters (digits, département 2A/2B allowed) and a "
                f"2-digit key, 15 in all after removing spaces; got {len(compact)} characters")
        department = _CORSICA.get(compact[5:7], compact[5:7])
        number = int(compact[:5] + department + compact[7:13])
        if int(compact[13:]) != 97 - number % 97:
            raise IdentifierError(f"{label} key {compact[13:]} does not match the number "
                                  "(97 − number mod 97): a digit is wrong")
        return compact

    return normalise


def _nhs_number(value: str) -> str:
    """NHS number: 10 digits, the last a modulus-11 check digit (10 is never issued)."""
    compact = "".join(value.split()).replace("-", "")
    if not _NHS.fullmatch(compact):
        raise IdentifierError("NHS number must be 10 digits (spaces and hyphens allowed)")
    total = sum(int(d) * w for d, w in zip(compact[:9], range(10, 1, -1), strict=True))
    check = (11 - total % 11) % 11
    if check == 10 or check != int(compact[9]):
        raise IdentifierError("NHS number check digit does not match: a digit is wrong")
    return compact


def _test_person(value: str) -> str:
    """Demo and test identities: 1-64 characters of a safe alphabet, case kept."""
    compact = value.strip()
    if not _TEST.fullmatch(compact):
        raise IdentifierError(
            f"{TEST_PERSON} values are 1-64 characters of A-Z a-z 0-9 . _ -")
    return compact


SYSTEMS: dict[str, Callable[[str], str]] = {
    INS_NIR: _french_ins("INS-NIR"),
    INS_NIA: _french_ins("INS-NIA"),
    NHS_NUMBER: _nhs_number,
    TEST_PERSON: _test_person,
}


@dataclass(frozen=True)
class Identifier:
    """A person identifier: a known system and its value, normalised on construction."""

    system: str
    value: str

    def __post_init__(self) -> None:
        system = self.system.strip() if isinstance(self.system, str) else ""
        normalise = SYSTEMS.get(system)
        if normalise is None:
            raise IdentifierError(
                f"unknown identifier system {system!r}: known are {', '.join(sorted(SYSTEMS))}")
        if not isinstance(self.value, str) or not self.value.strip():
            raise IdentifierError(f"empty value for identifier system {system}")
        object.__setattr__(self, "system", system)
        object.__setattr__(self, "value", normalise(self.value))

    @classmethod
    def parse(cls, token: str) -> Identifier:
        """FHIR token syntax `system|value` (as the CLI and search parameters write it)."""
        system, sep, value = token.partition("|")
        if not sep or not system.strip() or not value.strip():
            raise IdentifierError("an identifier is written system|value, e.g. "
                                  f"{TEST_PERSON}|alice")
        return cls(system, value)

    def canonical(self) -> bytes:
        """The OPRF input: length-prefixed system and normalised value, under a label."""
        parts = [_INPUT_LABEL, self.system.encode(), self.value.encode()]
        return b"".join(len(p).to_bytes(2, "big") + p for p in parts)

    def __repr__(self) -> str:  # a value in a log line or a traceback is a disclosure
        return f"Identifier(system={self.system!r}, value=<{len(self.value)} chars>)"


def pseudonym(oprf_output: bytes) -> str:
    """The federation's pseudonym format `ps_<32 hex>` from an OPRF output."""
    return PSEUDONYM_PREFIX + oprf_output.hex()[:PSEUDONYM_HEX_CHARS]
