"""A person's own page in real Chromium: a citizen logs in on Keycloak's page, sees the
consent an organisation recorded for them (by their INS, pseudonymised on the
steward's side) with its history and receipt, gives and withdraws consent per
purpose, and sees the approved project whose run used their records at two hospitals
(as the nodes reported it); another citizen sees none of it, and other roles get no
such page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from federation.node import participation
from pseudonymisation.identifiers import INS_NIR, Identifier
from tests.fixtures.browser import WebPortal, login, shot
from tests.fixtures.keycloak import CITIZEN_INS
from tests.fixtures.portal import LivePortal, approved_run_permit, node_of, submitted_run
from tests.fixtures.pseudonymiser import LivePseudonymiser

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def citizen_portal(keycloak, tmp_path_factory) -> Iterator[tuple[WebPortal, str]]:
    """A portal with a pseudonymisation service, citizen1's consent from org-a, and a
    run under alice's permit that used citizen1's records at hospitals A and B."""
    service = LivePseudonymiser(tmp_path_factory.mktemp("pseudonymiser"),
                                keycloak_url=keycloak.base_url, keycloak_realm=keycloak.realm,
                                audience=keycloak.audience).start()
    server = LivePortal(keycloak, tmp_path_factory.mktemp("me-portal"),
                        oidc_client_secret=keycloak.portal_client_secret,
                        pseudonymiser_url=service.url).start()
    portal = WebPortal(server, keycloak, keycloak.demo_password)
    person = service.client(lambda: keycloak.token("steward1")).pseudonyms(
        [Identifier(INS_NIR, CITIZEN_INS["citizen1"])])[0]
    resp = portal.api("POST", "/v1/consents", "steward1",
                      json={"subject": person, "purposes": ["ai_training"]})
    assert resp.status_code == 201, resp.text
    submitted_run(server, approved_run_permit(server, keycloak), 7)
    tmp = tmp_path_factory.mktemp("nodes")
    for hospital in ("hospital-a", "hospital-b"):
        participation.report(node_of(tmp / hospital, server.url, keycloak, hospital),
                             "flwr-7", "pneumonia", [person])
    try:
        yield portal, person
    finally:
        server.stop()
        service.stop()


def test_a_citizen_manages_their_consent_and_sees_no_one_else(citizen_portal, new_page):
    portal, person = citizen_portal
    camille = new_page()
    login(camille, portal, "citizen1", "/me")
    expect(camille.locator("main")).to_contain_text(person)
    consent = camille.locator("#my-consents article")
    expect(consent).to_have_count(1)
    expect(consent).to_contain_text("org-a")
    expect(consent.locator(".history tbody tr")).to_have_count(1)
    runs = camille.locator("#runs-table tbody tr")
    expect(runs).to_have_count(1)
    expect(runs).to_contain_text("Pneumonia detection from chest X-rays")
    expect(runs.locator("td.num")).to_have_text("2")
    shot(camille, "me-01-citizen")

    with camille.context.expect_page() as opened:
        consent.locator("a.receipt").click()
    receipt = opened.value
    receipt.wait_for_load_state()
    expect(receipt.locator("body")).to_contain_text(person)
    receipt.close()

    camille.click("#give-statistics")
    expect(camille.locator(".flash")).to_contain_text("Your consent was given")
    expect(camille.locator("#choice-statistics")).to_contain_text("active")
    camille.click("#withdraw-statistics")
    expect(camille.locator(".flash")).to_contain_text("withdrawn")
    expect(camille.locator("#choice-statistics")).to_contain_text("withdrawn")
    own = camille.locator("#my-consents article", has_text="self:statistics")
    expect(own.locator(".history tbody tr")).to_have_count(2)
    camille.click("#object-education")  # an objection to a purpose never consented to
    expect(camille.locator("#choice-education")).to_contain_text("withdrawn")
    expect(camille.locator("#give-education")).to_be_visible()
    shot(camille, "me-02-withdrawn")

    claude = new_page(locale="fr-FR")
    login(claude, portal, "citizen2", "/me")
    expect(claude.locator("h1")).to_have_text("Mes données de santé")
    expect(claude.locator("#no-consents")).to_be_visible()
    expect(claude.locator("#no-runs")).to_be_visible()
    expect(claude.locator("main")).not_to_contain_text(person)
    shot(claude, "me-03-other-citizen-fr")

    steward = new_page()
    login(steward, portal, "steward1")
    expect(steward.locator("nav")).not_to_contain_text("My health data")
    response = steward.goto(portal.url + "/me")
    assert response is not None and response.status == 403
