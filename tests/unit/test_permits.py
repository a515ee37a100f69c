"""Permits verify only as signed, only while valid, never once revoked."""

import base64
import json
import time

import pytest

from access_control.permits import PermitError, PermitKeyRing, verify_permit
from tre.core.schemas import PermitClaims, PermitDataset

pytestmark = pytest.mark.unit


def claims(**over) -> PermitClaims:
    now = int(time.time())
    base = dict(iss="tre-portal", permit_id="pmt_1", request_id="req_1", sub="alice-sub",
                purpose="ai_training",
                datasets=[PermitDataset(node_id="hospital-a", dataset_id="pneumo",
                                        epsilon_cap=8, delta_cap=1e-5)],
                app_id="dp-train", app_hash="a" * 64, iat=now, nbf=now, exp=now + 3600)
    return PermitClaims(**(base | over))


@pytest.fixture
def ring(tmp_path):
    return PermitKeyRing.load_or_create(tmp_path / "keys.json")


def test_signed_permit_verifies_with_published_key(ring):
    token = ring.sign(claims())
    assert verify_permit(token, ring.public_jwks()).permit_id == "pmt_1"
    assert all("d" not in k for k in ring.public_jwks()["keys"])  # no private part published


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_changed_claim_does_not_verify(ring):
    header, payload, sig = ring.sign(claims()).split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    body["datasets"][0]["epsilon_cap"] = 50
    forged = ".".join([header, _b64(json.dumps(body).encode()), sig])
    with pytest.raises(PermitError, match="signature"):
        verify_permit(forged, ring.public_jwks())


def test_other_portal_key_is_refused(ring, tmp_path):
    other = PermitKeyRing.load_or_create(tmp_path / "other.json")
    with pytest.raises(PermitError, match="unknown key"):
        verify_permit(other.sign(claims()), ring.public_jwks())


def test_alg_none_is_refused(ring):
    header = _b64(json.dumps({"alg": "none", "kid": ring.active_kid}).encode())
    payload = _b64(claims().model_dump_json().encode())
    with pytest.raises(PermitError):
        verify_permit(f"{header}.{payload}.", ring.public_jwks())


def test_expired_and_not_yet_valid_are_refused(ring):
    now = int(time.time())
    with pytest.raises(PermitError, match="expired"):
        verify_permit(ring.sign(claims(exp=now - 120)), ring.public_jwks())
    with pytest.raises(PermitError, match="not valid yet"):
        verify_permit(ring.sign(claims(nbf=now + 3600)), ring.public_jwks())


def test_revoked_is_refused(ring):
    with pytest.raises(PermitError, match="revoked"):
        verify_permit(ring.sign(claims()), ring.public_jwks(), revoked=["pmt_1"])


def test_rotation_keeps_old_permits_valid(ring, tmp_path):
    old = ring.sign(claims())
    ring.rotate()
    new = ring.sign(claims(permit_id="pmt_2"))
    reloaded = PermitKeyRing.load_or_create(tmp_path / "keys.json")
    jwks = reloaded.public_jwks()
    assert len(jwks["keys"]) == 2
    assert verify_permit(old, jwks).permit_id == "pmt_1"
    assert verify_permit(new, jwks).permit_id == "pmt_2"


def test_key_file_is_private(ring):
    assert ring.path.stat().st_mode & 0o077 == 0
