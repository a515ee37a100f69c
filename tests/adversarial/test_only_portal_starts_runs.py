"""Only the portal starts runs: what a hostile participant gets from the SuperLink itself.

The federation as deployed: real Keycloak, the real portal over HTTP, the SuperLink
with TLS and SuperNode authentication behind its Fleet gateway, three real hospital
nodes enrolled through the portal. The attacker holds what a hospital operator holds
(the federation CA, a node key) and has reached the SuperLink's Control API anyway
(the gateway does not publish it: see test_topology), with a permit copied from an
earlier run's configuration.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from federation import launch
from federation.launch.params import RunParams
from federation.node.home import node_session
from federation.node.ledger import PrivacyLedger
from tests.adversarial import hostile_fabs
from tests.runs.conftest import (  # noqa: F401 - the federation fixture
    HOSPITALS,
    Federation,
    federation,
    refused_at_the_superlink,
)

pytestmark = pytest.mark.integration


def _node_state(fed: Federation, hospital: str) -> tuple[list[str], list[tuple]]:
    with node_session(fed.homes[hospital]) as home:
        actions = [e.action for e in home.audit.entries()]
        charges = PrivacyLedger(home.db, home.audit, actor="t").snapshot()["privacy_charge"]
    return actions, charges


@pytest.mark.timeout(1500)
def test_runs_not_submitted_by_the_portal_get_nothing(federation: Federation,  # noqa: F811
                                                      tmp_path: Path) -> None:
    fed = federation
    for i, hospital in enumerate(HOSPITALS):
        fed.add_home(hospital, limit=80, index=i)
        fed.start_node(hospital)
    permit = fed.permit(HOSPITALS)
    ca = fed.tls["root_certificates"]

    # 1. The gateway that hospitals reach publishes the Fleet API and nothing else.
    for path in ("/v1/control/start-run", "/v1/control/list-runs",
                 "/v1/runtime/acquire-task", "/v1/fleet/../control/start-run"):
        r = httpx.post(f"https://{fed.cluster.superlink}{path}", content=b"", verify=str(ca))
        assert r.status_code == 404, (path, r.status_code, r.text)

    # 2. A permit copied from a run's configuration, resubmitted with the unchanged
    #    approved bundle as a run of the attacker's own: it carries no results credential
    #    of the portal's, so the SuperLink's runtime refuses it and no hospital hears of
    #    it (each would refuse it anyway: no run ticket, see tests/federation).
    before = {h: _node_state(fed, h) for h in HOSPITALS}
    handle = launch.start_run(fed.cluster.control, RunParams(
        permit=permit["token"], rounds=1, batch_size=32, target_epsilon=6.0, min_nodes=1,
        round_timeout=120), tmp_path / "stolen", credential=None, insecure=False,
        root_certificates=ca)
    refused_at_the_superlink(fed, handle)
    for hospital in HOSPITALS:
        assert _node_state(fed, hospital) == before[hospital]

    # 3. A bundle carrying its own code, submitted straight to the SuperLink: the
    #    SuperLink's runtime refuses it; no message reaches any hospital.
    marker = tmp_path / "markers"
    marker.mkdir()
    evil = launch.submit_app(fed.cluster.control, hostile_fabs.own_clientapp(
        tmp_path / "evil", marker), {}, tmp_path / "evil-results", credential=None,
        insecure=False, root_certificates=ca)
    refused_at_the_superlink(fed, evil)
    assert list(marker.iterdir()) == []

    # 4. The researcher's own run, through the portal, still has its whole budget.
    run = fed.start_run(permit["id"], epsilon=6.0)
    final = fed.wait_run(run["id"])
    assert final["state"] == "completed", (final, fed.cluster.logs())
    assert sorted(final["epsilon_per_node"]) == HOSPITALS
    log = httpx.get(f"{fed.portal.url}/v1/audit", params={"limit": 1000},
                    headers=fed.headers("auditor1")).json()["entries"]
    tickets = [e for e in log if e["action"] == "run.ticket" and e["object_id"] == run["id"]]
    assert sorted(e["details"]["hospital"] for e in tickets) == HOSPITALS
    assert all(e["details"]["flower_run_id"] != handle.run_id for e in log
               if e["action"] == "run.ticket")
