"""RFC 9497 Appendix A.1.1: OPRF(ristretto255, SHA-512), mode OPRF, both test vectors.

The values are the RFC's (also shipped as poc/vectors/allVectors.json in
cfrg/draft-irtf-cfrg-voprf): derived key, blinded, evaluated and final outputs.
"""

from __future__ import annotations

import pysodium
import pytest

from pseudonymisation import oprf

pytestmark = pytest.mark.unit

SEED = bytes.fromhex("a3" * 32)
KEY_INFO = bytes.fromhex("74657374206b6579")  # "test key"
SK_SM = "5ebcea5ee37023ccb9fc2d2019f9d7737be85591ae8652ffa9ef0f4d37063b0e"
BLIND = "64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706"
VECTORS = [
    ("00",
     "609a0ae68c15a3cf6903766461307e5c8bb2f95e7e6550e1ffa2dc99e412803c",
     "7ec6578ae5120958eb2db1745758ff379e77cb64fe77b0b2d8cc917ea0869c7e",
     "527759c3d9366f277d8c6020418d96bb393ba2afb20ff90df23fb7708264e2f3"
     "ab9135e3bd69955851de4b1f9fe8a0973396719b7912ba9ee8aa7d0b5e24bcf6"),
    ("5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
     "da27ef466870f5f15296299850aa088629945a17d1f5b7f5ff043f76b3c06418",
     "b4cbf5a4f1eeda5a63ce7b77c7d23f461db3fcab0dd28e4e17cecb5c90d02c25",
     "f4a74c9c592497375e796aa837e907b1a045d34306a749db9f34221f7e750cb4"
     "f2a6413a6bf6fa5e19ba6348eb673934a722a7ede2e7621306d18951e7cf2c73"),
]


def test_context_string_is_the_rfcs():
    assert oprf.CONTEXT_STRING == b"OPRFV1-\x00-ristretto255-SHA512"


def test_derive_key_pair_gives_the_rfc_key():
    secret, public = oprf.derive_key_pair(SEED, KEY_INFO)
    assert secret.hex() == SK_SM
    assert public == pysodium.crypto_scalarmult_ristretto255_base(secret)


@pytest.mark.parametrize(("data", "blinded", "evaluated", "output"), VECTORS)
def test_rfc_9497_vectors(data, blinded, evaluated, output):
    data = bytes.fromhex(data)
    blind, blinded_element = oprf.blind(data, bytes.fromhex(BLIND))
    assert blinded_element.hex() == blinded
    evaluated_element = oprf.blind_evaluate(bytes.fromhex(SK_SM), blinded_element)
    assert evaluated_element.hex() == evaluated
    assert oprf.finalize(data, blind, evaluated_element).hex() == output


def test_expand_message_xmd_rfc_9380_vector():
    """RFC 9380 Appendix K.3 (expand_message_xmd, SHA-512): msg "abc", 0x80 bytes."""
    dst = b"QUUX-V01-CS02-with-expander-SHA512-256"
    assert oprf.expand_message_xmd(b"abc", dst, 0x80).hex() == (
        "7f1dddd13c08b543f2e2037b14cefb255b44c83cc397c1786d975653e36a6b11"
        "bdd7732d8b38adb4a0edc26a0cef4bb45217135456e58fbca1703cd6032cb134"
        "7ee720b87972d63fbf232587043ed2901bce7f22610c0419751c065922b48843"
        "1851041310ad659e4b23520e1772ab29dcdeb2002222a363f0c2b1c972b3efe1")


def test_two_blindings_of_one_input_differ_and_finalize_to_one_output():
    secret = oprf.random_scalar()
    data = b"one person"
    (r1, b1), (r2, b2) = oprf.blind(data), oprf.blind(data)
    assert b1 != b2 and b1 != oprf.hash_to_group(data)
    out1 = oprf.finalize(data, r1, oprf.blind_evaluate(secret, b1))
    out2 = oprf.finalize(data, r2, oprf.blind_evaluate(secret, b2))
    assert out1 == out2 and len(out1) == oprf.OUTPUT_BYTES
    assert out1 != oprf.finalize(b"another person", *_blind_eval(secret, b"another person"))


def _blind_eval(secret: bytes, data: bytes) -> tuple[bytes, bytes]:
    r, b = oprf.blind(data)
    return r, oprf.blind_evaluate(secret, b)


def test_another_key_gives_another_output():
    data = b"x"
    r, b = oprf.blind(data)
    assert (oprf.finalize(data, r, oprf.blind_evaluate(oprf.random_scalar(), b))
            != oprf.finalize(data, r, oprf.blind_evaluate(oprf.random_scalar(), b)))


@pytest.mark.parametrize(("element", "message"), [
    (bytes(32), "identity"),
    (b"\xff" * 32, "not a valid ristretto255 element"),
    (b"\x01" * 31, "must be 32 bytes"),
])
def test_invalid_elements_are_refused(element, message):
    with pytest.raises(oprf.OprfError, match=message):
        oprf.blind_evaluate(oprf.random_scalar(), element)
    with pytest.raises(oprf.OprfError, match=message):
        oprf.finalize(b"x", oprf.random_scalar(), element)


def test_zero_or_unreduced_scalars_are_refused():
    with pytest.raises(oprf.OprfError, match="non-zero"):
        oprf.check_scalar(bytes(32))
    with pytest.raises(oprf.OprfError, match="not reduced"):
        oprf.check_scalar(b"\xff" * 32)
