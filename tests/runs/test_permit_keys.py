"""Acceptance: permit keys that nodes follow. The portal rotates its signing key and a
new run succeeds at every node without re-initialising any; the portal retires the
old key and a permit it signed is refused at every node with `permit-key-retired`.

Real Keycloak, the portal over HTTP, a SuperLink with TLS and SuperNode
authentication, three enrolled SuperNodes on real DuckDB homes.
"""

from __future__ import annotations

import httpx
import pytest

from access_control.permits import signing_kid
from federation.launch.fab import fab_hash
from federation.node.authorisation import RunPermit
from federation.node.gate import Gate
from federation.node.home import node_session
from federation.node.refusal import Refusal

from .conftest import HOSPITALS, Federation

pytestmark = pytest.mark.integration


def _pinned_kids(fed: Federation, hospital: str) -> set[str]:
    with node_session(fed.homes[hospital]) as home:
        return {k["kid"] for k in home.permit_jwks()["keys"]}


@pytest.mark.timeout(900)
def test_rotation_is_followed_and_retirement_refused_everywhere(federation) -> None:
    fed = federation
    for i, hospital in enumerate(HOSPITALS):
        fed.add_home(hospital, limit=40, index=i)
        fed.start_node(hospital)
    old = fed.permit(HOSPITALS)
    old_kid = signing_kid(old["token"])
    admin = fed.headers("admin1")

    rotated = httpx.post(f"{fed.portal.url}/v1/permit-keys/rotate", headers=admin).json()
    new_kid = rotated["active_kid"]
    assert new_kid != old_kid and all(new_kid not in _pinned_kids(fed, h) for h in HOSPITALS)
    permit = fed.permit(HOSPITALS)
    assert signing_kid(permit["token"]) == new_kid
    final = fed.wait_run(fed.start_run(permit["id"])["id"])
    assert final["state"] == "completed", (final, fed.cluster.logs())
    assert sorted(final["epsilon_per_node"]) == HOSPITALS
    for hospital in HOSPITALS:  # each node learnt the new key itself, and audited it
        assert {old_kid, new_kid} <= _pinned_kids(fed, hospital)
        assert "permit_key.refresh" in fed.audit_actions(hospital)

    r = httpx.post(f"{fed.portal.url}/v1/permit-keys/{old_kid}/retire",
                   headers=fed.headers("rev1"))
    assert r.status_code == 403
    r = httpx.post(f"{fed.portal.url}/v1/permit-keys/{old_kid}/retire", headers=admin)
    assert r.status_code == 200, r.text
    assert old_kid in r.json()["jwks"]["retired"]
    assert httpx.post(f"{fed.portal.url}/v1/permit-keys/{old_kid}/retire",
                      headers=admin).status_code == 409
    # the portal starts nothing under a permit its retired key signed ...
    r = httpx.post(f"{fed.portal.url}/v1/runs", headers=fed.headers("alice"),
                   json={"permit_id": old["id"], "rounds": 1})
    assert r.status_code == 409 and "retired key" in r.json()["detail"], r.text
    # ... and whoever presents that permit to a node anyway is refused there, by every node
    for hospital in HOSPITALS:
        with node_session(fed.homes[hospital]) as home:
            with pytest.raises(Refusal) as refused:
                Gate(home).authorise(RunPermit(old["token"], fab_hash(), "flwr-1",
                                               run_tickets=lambda run: ""))
            assert refused.value.code == "permit-key-retired", refused.value
            refusals = [e.details for e in home.audit.entries() if e.action == "federation.refused"]
        assert refusals[-1]["code"] == "permit-key-retired"
        assert _pinned_kids(fed, hospital) == {new_kid}  # the retired key is dropped
    log = httpx.get(f"{fed.portal.url}/v1/audit", params={"limit": 1000},
                    headers=fed.headers("auditor1")).json()["entries"]
    assert [e["object_id"] for e in log if e["action"] == "permit_key.retire"] == [old_kid]
