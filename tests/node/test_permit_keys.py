"""A node follows the portal's permit keys: a key it has not pinned is fetched from its
portal (over TLS checked against the pinned CA) and audited; a retired key is dropped
and whatever it signed refused; an unknown key the portal cannot vouch for is refused.

The real portal app over HTTPS, real node homes."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from federation.node.permit_keys import KeyRefused, keys_for
from federation.node.service import init_node
from federation.provision import provision
from tests.fixtures.portal import LivePortal
from tre.core.schemas import FeasibilityTicket, Purpose

pytestmark = pytest.mark.integration


def _ticket(ring) -> str:  # noqa: ANN001 - PermitKeyRing
    now = int(time.time())
    return ring.sign_ticket(FeasibilityTicket(
        iss="tre-portal", ticket_id=f"fq_{uuid.uuid4().hex[:8]}", sub="alice",
        purpose=Purpose.SCIENTIFIC_RESEARCH, cohort_digest="0" * 64, hospitals=["h"],
        iat=now, nbf=now, exp=now + 60))


def test_rotation_followed_retirement_dropped(tmp_path: Path) -> None:
    pki = provision(tmp_path / "pki", [])
    with LivePortal(None, tmp_path / "portal", tls=pki) as server:
        ring = server.portal.keys
        home = init_node(tmp_path / "home", hospital_id="h", portal_url=server.url,
                         portal_ca=pki.ca_cert)
        first = ring.active_kid
        before = _ticket(ring)
        assert keys_for(home, before)["keys"][0]["kid"] == first

        second = ring.rotate()
        jwks = keys_for(home, _ticket(ring))
        assert {k["kid"] for k in jwks["keys"]} == {first, second}
        assert {k["kid"] for k in home.permit_jwks()["keys"]} == {first, second}
        refresh = [e.details for e in home.audit.entries() if e.action == "permit_key.refresh"]
        assert refresh[-1]["added"] == [second]

        ring.retire(first)
        with pytest.raises(KeyRefused) as refused:  # told by the revocation list
            keys_for(home, before, retired=frozenset({first}))
        assert refused.value.code == "permit-key-retired"
        assert {k["kid"] for k in home.permit_jwks()["keys"]} == {second}
        assert home.permit_jwks()["retired"] == [first]
        with pytest.raises(KeyRefused) as refused:  # and remembered from then on
            keys_for(home, before)
        assert refused.value.code == "permit-key-retired"

    # a key nobody can vouch for (the portal is down): refused, nothing pinned
    third = ring.rotate()
    with pytest.raises(KeyRefused) as refused:
        keys_for(home, _ticket(ring))
    assert refused.value.code == "permit-key-unknown" and third in str(refused.value)
    assert third not in {k["kid"] for k in home.permit_jwks()["keys"]}
