"""RFC 9497 OPRF, mode 0x00 (plain OPRF, not verifiable), suite ristretto255-SHA512.

The client blinds its input with a fresh random scalar, the server multiplies the
blinded element by its secret key, the client removes the blind and hashes: the
server learns nothing about the input (a blinded element is a uniformly random group
element) and the client learns nothing about the key but the one output. The group
operations are libsodium's (through pysodium); hashing and encodings follow the RFC
byte for byte, so the RFC's Appendix A vectors check this module.
"""

from __future__ import annotations

import hashlib
import hmac

import pysodium

ELEMENT_BYTES = 32
SCALAR_BYTES = 32
OUTPUT_BYTES = 64
IDENTITY = bytes(ELEMENT_BYTES)  # the canonical encoding of the identity element

SUITE = "ristretto255-SHA512"
MODE_OPRF = 0x00
CONTEXT_STRING = b"OPRFV1-" + bytes([MODE_OPRF]) + b"-" + SUITE.encode()
_HASH_TO_GROUP_DST = b"HashToGroup-" + CONTEXT_STRING
_DERIVE_KEY_PAIR_DST = b"DeriveKeyPair" + CONTEXT_STRING


class OprfError(ValueError):
    """An element, scalar or input the protocol must refuse; the message says which."""


def _i2osp(value: int, length: int) -> bytes:
    return value.to_bytes(length, "big")


def expand_message_xmd(msg: bytes, dst: bytes, length: int) -> bytes:
    """RFC 9380 §5.3.1 with SHA-512 (b = 64 bytes, block = 128 bytes)."""
    ell = -(-length // 64)
    if ell > 255 or length > 65535 or len(dst) > 255:
        raise OprfError("expand_message_xmd: requested length or DST too long")
    dst_prime = dst + _i2osp(len(dst), 1)
    b0 = hashlib.sha512(bytes(128) + msg + _i2osp(length, 2) + b"\x00" + dst_prime).digest()
    blocks = [hashlib.sha512(b0 + b"\x01" + dst_prime).digest()]
    for i in range(2, ell + 1):
        mixed = bytes(x ^ y for x, y in zip(b0, blocks[-1], strict=True))
        blocks.append(hashlib.sha512(mixed + _i2osp(i, 1) + dst_prime).digest())
    return b"".join(blocks)[:length]


def hash_to_group(data: bytes) -> bytes:
    """HashToGroup: expand to 64 uniform bytes, then ristretto255's one-way map."""
    return pysodium.crypto_core_ristretto255_from_hash(
        expand_message_xmd(data, _HASH_TO_GROUP_DST, 64))


def hash_to_scalar(data: bytes, dst: bytes) -> bytes:
    """HashToScalar: 64 uniform bytes reduced modulo the group order (little-endian)."""
    return pysodium.crypto_core_ristretto255_scalar_reduce(expand_message_xmd(data, dst, 64))


def derive_key_pair(seed: bytes, info: bytes) -> tuple[bytes, bytes]:
    """DeriveKeyPair (RFC 9497 §3.2.1): (skS, pkS) from a 32-byte seed and key info.
    The service draws its key at random; this exists so the RFC vectors can be checked."""
    if len(seed) != 32:
        raise OprfError("the seed must be 32 bytes")
    derive_input = seed + _i2osp(len(info), 2) + info
    for counter in range(256):
        secret = hash_to_scalar(derive_input + _i2osp(counter, 1), _DERIVE_KEY_PAIR_DST)
        if secret != bytes(SCALAR_BYTES):
            return secret, pysodium.crypto_scalarmult_ristretto255_base(secret)
    raise OprfError("DeriveKeyPair: no non-zero scalar after 256 tries")


def random_scalar() -> bytes:
    """A uniformly random non-zero scalar (libsodium never returns zero)."""
    return pysodium.crypto_core_ristretto255_scalar_random()


def check_scalar(scalar: bytes) -> bytes:
    """A secret key or blind must be a canonical, non-zero scalar."""
    if len(scalar) != SCALAR_BYTES or scalar == bytes(SCALAR_BYTES):
        raise OprfError("a scalar must be 32 bytes and non-zero")
    if pysodium.crypto_core_ristretto255_scalar_reduce(scalar + bytes(32)) != scalar:
        raise OprfError("the scalar is not reduced modulo the group order")
    return scalar


def check_element(element: bytes) -> bytes:
    """DeserializeElement: a canonical ristretto255 encoding, not the identity."""
    if len(element) != ELEMENT_BYTES:
        raise OprfError(f"an element must be {ELEMENT_BYTES} bytes, not {len(element)}")
    if hmac.compare_digest(element, IDENTITY):
        raise OprfError("the element is the identity")
    if not pysodium.crypto_core_ristretto255_is_valid_point(element):
        raise OprfError("the bytes are not a valid ristretto255 element")
    return element


def blind(data: bytes, blind_scalar: bytes | None = None) -> tuple[bytes, bytes]:
    """Blind(input) → (blind, blindedElement). A fixed blind is for the RFC vectors only."""
    r = check_scalar(blind_scalar) if blind_scalar is not None else random_scalar()
    element = hash_to_group(data)
    if element == IDENTITY:  # the RFC's InvalidInputError; probability ~2^-252
        raise OprfError("the input maps to the identity element")
    return r, pysodium.crypto_scalarmult_ristretto255(r, element)


def blind_evaluate(secret_key: bytes, blinded_element: bytes) -> bytes:
    """BlindEvaluate: the server's only step, skS · blindedElement."""
    return _scalar_mult(secret_key, check_element(blinded_element))


def finalize(data: bytes, blind_scalar: bytes, evaluated_element: bytes) -> bytes:
    """Finalize: unblind and hash input and result into the 64-byte OPRF output."""
    element = check_element(evaluated_element)
    unblinded = _scalar_mult(pysodium.crypto_core_ristretto255_scalar_invert(blind_scalar),
                             element)
    return hashlib.sha512(_i2osp(len(data), 2) + data + _i2osp(len(unblinded), 2) + unblinded
                          + b"Finalize").digest()


def evaluate(secret_key: bytes, data: bytes) -> bytes:
    """The OPRF output computed by the key holder directly (tests and key checks)."""
    return finalize(data, b"\x01" + bytes(31), blind_evaluate(secret_key, hash_to_group(data)))


def _scalar_mult(scalar: bytes, element: bytes) -> bytes:
    try:
        return pysodium.crypto_scalarmult_ristretto255(scalar, element)
    except ValueError as exc:  # libsodium refuses a product that is the identity
        raise OprfError("the product is the identity element") from exc
