"""A person's own view (issue 14): a citizen signs in with a token carrying their INS.

Real Keycloak (demo citizens with an `ins` attribute mapped into their tokens), the
real pseudonymisation service, and the real portal, which derives each citizen's
pseudonym through that service with its own service account. A steward records
consent by identifier as the CLI does (pseudonymised on the client); the person then
sees it with its history and receipt, withdraws and gives consent per purpose
(audited), and another person sees none of it. The INS is in no byte of the portal's
state once it has stopped.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from federation.node import participation
from pseudonymisation.identifiers import INS_NIR, Identifier
from tests.fixtures.keycloak import CITIZEN_INS
from tests.fixtures.portal import (
    LivePortal,
    approved_run_permit,
    bearer,
    node_of,
    portal_settings,
    submitted_run,
)
from tre.core.run_members import member_tag
from tre.portal.app import create_app

pytestmark = pytest.mark.integration


def _files(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in root.rglob("*") if p.is_file()]


@pytest.mark.timeout(300)
def test_a_citizen_sees_and_changes_only_their_own_consents(keycloak, tmp_path,
                                                            make_pseudonymiser) -> None:
    service = make_pseudonymiser(tmp_path / "pseudonymiser")
    state = tmp_path / "portal"
    settings = portal_settings(keycloak, state, pseudonymiser_url=service.url,
                               oidc_client_secret=keycloak.portal_client_secret)
    steward = service.client(lambda: keycloak.token("steward1"))
    person = steward.pseudonyms([Identifier(INS_NIR, CITIZEN_INS["citizen1"])])[0]
    keycloak.ensure_user("citizen-noins", roles=["citizen"])
    with TestClient(create_app(settings)) as api:
        camille, claude = bearer(keycloak.token("citizen1")), bearer(keycloak.token("citizen2"))
        recorded = api.post("/v1/consents", headers=bearer(keycloak.token("steward1")),
                            json={"subject": person, "purposes": ["ai_training"]})
        assert recorded.status_code == 201, recorded.text
        cid = recorded.json()["id"]

        mine = api.get("/v1/me/consents", headers=camille)
        assert mine.status_code == 200, mine.text
        assert mine.json()["subject"] == person
        [item] = mine.json()["items"]
        assert item["id"] == cid and item["organisation"] == "org-a"
        assert [v["change"] for v in item["history"]] == ["record"]
        kept = api.get(f"/v1/me/consents/{cid}/receipt", headers=camille)
        assert kept.status_code == 200 and kept.json()["subject"] == person
        page = api.get(f"/v1/me/consents/{cid}/receipt?format=html", headers=camille)
        assert page.status_code == 200 and person in page.text

        # another person: an empty view, and Camille's consent does not exist for them
        theirs = api.get("/v1/me/consents", headers=claude).json()
        assert theirs["items"] == [] and theirs["subject"] != person
        assert api.get(f"/v1/me/consents/{cid}/receipt", headers=claude).status_code == 404
        # other roles have no view of their own; a citizen token without an INS neither
        for user in ("steward1", "alice", "auditor1"):
            assert api.get("/v1/me/consents",
                           headers=bearer(keycloak.token(user))).status_code == 403, user
        no_ins = api.get("/v1/me/consents", headers=bearer(keycloak.token("citizen-noins")))
        assert no_ins.status_code == 403 and "ins" in no_ins.json()["detail"]
        assert api.get("/v1/consents", headers=camille).status_code == 403

        # per purpose, in her own name: withdraw AI training, then give it again
        withdrawn = api.post("/v1/me/purposes/ai_training", headers=camille,
                             json={"status": "withdrawn", "reason": "changed my mind"})
        assert withdrawn.status_code == 200, withdrawn.text
        own = withdrawn.json()
        assert own["organisation"] == "self:ai_training" and own["status"] == "withdrawn"
        again = api.post("/v1/me/purposes/ai_training", headers=camille,
                         json={"status": "withdrawn"})
        assert again.status_code == 409
        given = api.post("/v1/me/purposes/ai_training", headers=camille,
                         json={"status": "active"})
        assert given.status_code == 200 and given.json()["id"] == own["id"]
        assert [v["change"] for v in given.json()["history"]] == ["record", "reconsent"]
        assert api.post("/v1/me/purposes/not-a-purpose", headers=camille,
                        json={"status": "active"}).status_code == 422
        assert api.post("/v1/me/purposes/statistics", headers=claude,
                        json={"status": "withdrawn"}).status_code == 200
        assert len(api.get("/v1/me/consents", headers=camille).json()["items"]) == 2

        # the nodes see her own statements like any organisation's (the snapshot)
        snapshot = api.get("/v1/consents/snapshot",
                           headers=bearer(keycloak.client_token("hospital-a"))).json()
        assert {(c["organisation"], c["status"]) for c in snapshot["consents"]
                if c["subject"] == person} == {("org-a", "active"),
                                               ("self:ai_training", "active")}

        portal = api.app.state.portal
        changes = [e for e in portal.audit.entries() if e.object_id == own["id"]]
        assert [e.action for e in changes] == ["consent.record", "consent.reconsent"]
        assert {e.actor for e in changes} == {f"citizen:{person}"}
        assert changes[0].details["reason"] == "changed my mind"
        assert portal.audit.verify().ok
    service.stop()

    ins = CITIZEN_INS["citizen1"].encode()
    for path, data in _files(state):
        assert ins not in data and ins[:13] not in data, path


@pytest.mark.timeout(300)
def test_a_citizen_sees_the_runs_that_used_their_records_and_no_one_else(
        keycloak, tmp_path, make_pseudonymiser) -> None:
    """Nodes report each run's consented cohort as membership tags; the person sees the
    run that included them at two hospitals, not the later one that excluded them, and
    another person sees no run."""
    service = make_pseudonymiser(tmp_path / "pseudonymiser")
    node_token = service.client(lambda: keycloak.client_token("hospital-a"))
    person, other = node_token.pseudonyms([Identifier(INS_NIR, CITIZEN_INS["citizen1"]),
                                           Identifier(INS_NIR, "269054958815780")])
    with LivePortal(keycloak, tmp_path / "portal", pseudonymiser_url=service.url,
                    oidc_client_secret=keycloak.portal_client_secret) as server, \
            httpx.Client(base_url=server.url, timeout=30) as api:
        permit = approved_run_permit(server, keycloak)
        before, after = submitted_run(server, permit, 41), submitted_run(server, permit, 42)
        homes = {h: node_of(tmp_path / h, server.url, keycloak, h)
                 for h in ("hospital-a", "hospital-b", "hospital-c")}
        for hospital in ("hospital-a", "hospital-b"):
            participation.report(homes[hospital], "flwr-41", "pneumonia", [person, other])
            participation.report(homes[hospital], "flwr-41", "pneumonia", [person])  # a round
            participation.report(homes[hospital], "flwr-42", "pneumonia", [other])  # withdrawn
        participation.report(homes["hospital-c"], "flwr-41", "pneumonia", [person])  # no permit

        sent = [e for e in homes["hospital-a"].audit.entries() if e.action == "run.members"]
        assert [(e.object_id, e.details["tags"], e.details["new"]) for e in sent] == [
            ("flwr-41", 2, 2), ("flwr-41", 1, 0), ("flwr-42", 1, 1)]
        assert person not in str([e.details for e in sent])
        [refused] = [e for e in homes["hospital-c"].audit.entries()
                     if e.action == "run.members_failed"]
        assert "404" in refused.details["problem"]

        mine = api.get("/v1/me/runs", headers=bearer(keycloak.token("citizen1")))
        assert mine.status_code == 200, mine.text
        [run] = mine.json()["items"]
        assert run["run_id"] == before != after
        assert run["title"] == "Pneumonia detection from chest X-rays"
        assert run["hospitals"] == 2 and run["permit_id"] == permit["id"]
        assert set(run) == {"run_id", "permit_id", "title", "organisation", "purpose",
                            "started_at", "state", "hospitals"}
        assert api.get("/v1/me/runs",
                       headers=bearer(keycloak.token("citizen2"))).json()["items"] == []
        assert api.get("/v1/me/runs",
                       headers=bearer(keycloak.token("alice"))).status_code == 403

        # what the portal holds of a run is tags: no pseudonym, and only the tag of a
        # pseudonym it is given tells it anything
        with server.portal.db.reader() as cur:
            stored = cur.execute("SELECT tag FROM run_member WHERE flower_run_id = 41"
                                 ).fetchall()
        assert {t for (t,) in stored} == {member_tag("flwr-41", person),
                                          member_tag("flwr-41", other)}
        assert api.post("/v1/runs/flower/41/members", headers=bearer(keycloak.token("alice")),
                        json={"dataset_id": "pneumonia", "tags": ["0" * 64]}
                        ).status_code == 403
        bad = api.post("/v1/runs/flower/41/members",
                       headers=bearer(keycloak.client_token("hospital-a")),
                       json={"dataset_id": "pneumonia", "tags": [person]})
        assert bad.status_code == 422
