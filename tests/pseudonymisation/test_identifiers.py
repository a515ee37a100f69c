"""Client-side normalisation: one person, one canonical input, whatever the spelling."""

from __future__ import annotations

import pytest

from pseudonymisation.identifiers import (
    INS_NIA,
    INS_NIR,
    NHS_NUMBER,
    TEST_PERSON,
    Identifier,
    IdentifierError,
    pseudonym,
)

pytestmark = pytest.mark.unit

# the NIR example of the French administration's documentation: key 38
NIR = "255081416802538"


@pytest.mark.parametrize(("system", "written", "normalised"), [
    (INS_NIR, "2 55 08 14 168 025 38", NIR),
    (INS_NIR, NIR, NIR),
    (INS_NIR, " 1 85 01 2a 001 012 96 ", "185012A00101296"),  # Corsica: 2A counts as 19
    (INS_NIR, "269052B12345618", "269052B12345618"),  # 2B counts as 18
    (INS_NIA, "2 55 08 14 168 025 38", NIR),
    (NHS_NUMBER, "943 476 5919", "9434765919"),
    (NHS_NUMBER, "943-476-5919", "9434765919"),
    (TEST_PERSON, "  alice.01 ", "alice.01"),
])
def test_good_identifiers_are_normalised(system, written, normalised):
    assert Identifier(system, written).value == normalised


def test_spellings_of_one_identifier_give_one_oprf_input():
    a = Identifier(INS_NIR, "2 55 08 14 168 025 38")
    b = Identifier.parse(f" {INS_NIR} |{NIR}")
    assert a == b and a.canonical() == b.canonical()
    # the same value under another system is another person
    assert Identifier(INS_NIA, NIR).canonical() != a.canonical()


@pytest.mark.parametrize(("system", "value", "message"), [
    (INS_NIR, "255081416802539", "key 39 does not match"),
    (INS_NIR, "25508141680253", "15 in all"),
    (INS_NIR, "2550814168025388", "15 in all"),
    (INS_NIR, "25508X4168025 38", "15 in all"),
    (INS_NIR, "185012C00101296", "15 in all"),
    (INS_NIR, "185012A00101297", "does not match"),
    (INS_NIR, "955081416802538", "15 in all"),
    (NHS_NUMBER, "9434765918", "check digit"),
    (NHS_NUMBER, "943476591", "10 digits"),
    (NHS_NUMBER, "94347659190", "10 digits"),
    (TEST_PERSON, "alice smith", "A-Z a-z"),
    (TEST_PERSON, "a" * 65, "1-64"),
    (TEST_PERSON, "   ", "empty value"),
    ("urn:oid:1.2.250.1.213.1.4.10", "x", "unknown identifier system"),
    ("", "x", "unknown identifier system"),
    (None, "x", "unknown identifier system"),
    (TEST_PERSON, None, "empty value"),
])
def test_bad_identifiers_are_refused_by_name(system, value, message):
    with pytest.raises(IdentifierError, match=message):
        Identifier(system, value)


@pytest.mark.parametrize("token", ["no-bar", f"{TEST_PERSON}|", "|alice", "|"])
def test_parse_needs_system_and_value(token):
    with pytest.raises(IdentifierError, match=r"system\|value"):
        Identifier.parse(token)


def test_the_value_stays_out_of_repr():
    assert NIR not in repr(Identifier(INS_NIR, NIR))


def test_pseudonym_format_is_the_federations():
    assert pseudonym(bytes(range(64))) == "ps_" + bytes(range(16)).hex()
