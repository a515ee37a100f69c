"""A steward records and withdraws consent by a person's identifier in real Chromium
(issue 14): the page derives the pseudonym in the browser (blinding, the service's
OPRF through the portal's relay, finalisation), the same one the steward's CLI and
the hospitals derive; no request the browser makes carries the identifier, and the
portal's state holds none of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote_plus

import pytest
from playwright.sync_api import Request, expect

from pseudonymisation.identifiers import INS_NIR, NHS_NUMBER, Identifier
from tests.fixtures.browser import WebPortal, login, shot
from tests.fixtures.identifiers import assert_absent
from tests.fixtures.keycloak import CITIZEN_INS
from tests.fixtures.portal import LivePortal
from tests.fixtures.pseudonymiser import LivePseudonymiser

pytestmark = pytest.mark.browser

INS = CITIZEN_INS["citizen1"]
GROUPED = f"{INS[0]} {INS[1:3]} {INS[3:5]} {INS[5:7]} {INS[7:10]} {INS[10:13]} {INS[13:]}"
NHS = "943 476 5919"  # a valid modulus-11 NHS number, written as people write it


@pytest.fixture(scope="module")
def steward_portal(keycloak, tmp_path_factory) -> Iterator[tuple[WebPortal, LivePseudonymiser,
                                                                  Path]]:
    """A portal that knows the pseudonymisation service; its state directory, for grep."""
    service = LivePseudonymiser(tmp_path_factory.mktemp("pseudonymiser"),
                                keycloak_url=keycloak.base_url, keycloak_realm=keycloak.realm,
                                audience=keycloak.audience).start()
    state = tmp_path_factory.mktemp("steward-portal")
    server = LivePortal(keycloak, state, oidc_client_secret=keycloak.portal_client_secret,
                        pseudonymiser_url=service.url).start()
    try:
        yield WebPortal(server, keycloak, keycloak.demo_password), service, state
    finally:
        server.stop()
        service.stop()


def test_a_portal_without_its_oprf_library_says_so_in_the_page(steward_portal, new_page):
    """The vendor folder missing (the install step not run): the widget names the
    library and the install step, derives nothing and sends nothing to the relay. (Runs
    first: the next test stops the portal.)"""
    portal, _, _ = steward_portal
    page = new_page()
    page.route("**/static/vendor/**", lambda route: route.fulfill(status=404))
    sent: list[Request] = []
    page.on("request", lambda request: sent.append(request))
    login(page, portal, "steward1", "/consents/new")
    problem = page.locator("#subject-by-identifier [role=alert]")
    expect(problem).to_contain_text("/static/vendor/@noble/curves/ed25519.js did not load")
    expect(problem).to_contain_text("python -m tre.portal.web.vendor")
    page.fill("#subject-id-value", INS)
    page.click("#subject-derive")
    expect(problem).to_contain_text("did not load")
    expect(page.locator("#subject")).to_have_value("")
    assert not [r for r in sent if r.url.endswith("/consents/pseudonymise")]


def test_steward_records_and_withdraws_consent_by_identifier(steward_portal, keycloak,
                                                             new_page):
    portal, service, state = steward_portal
    expected = service.client(lambda: keycloak.token("steward1")).pseudonyms(
        [Identifier(INS_NIR, INS), Identifier(NHS_NUMBER, NHS)])
    page = new_page()
    sent: list[Request] = []
    page.on("request", lambda request: sent.append(request))
    login(page, portal, "steward1", "/consents/new")

    widget = page.locator("#subject-by-identifier")
    expect(widget).to_be_visible()
    # a wrong key: refused in the browser, nothing derived
    page.select_option("#subject-id-system", INS_NIR)
    page.fill("#subject-id-value", INS[:13] + f"{(int(INS[13:]) + 1) % 97:02d}")
    page.click("#subject-derive")
    expect(widget.locator("[role=alert]")).to_contain_text("not valid for the chosen system")
    expect(page.locator("#subject")).to_have_value("")
    # the NHS number, with spaces: normalised as the Python client does
    page.select_option("#subject-id-system", NHS_NUMBER)
    page.fill("#subject-id-value", NHS)
    page.click("#subject-derive")
    expect(page.locator("#subject")).to_have_value(expected[1])
    page.select_option("#subject-id-system", INS_NIR)
    page.fill("#subject-id-value", GROUPED)  # the INS as people write it
    page.click("#subject-derive")
    expect(page.locator("#subject")).to_have_value(expected[0])
    expect(widget.locator("[role=alert]")).to_have_text("")
    expect(page.locator("#subject-id-value")).to_have_value("")
    page.check("input[name=purposes][value=ai_training]")
    shot(page, "26-consent-by-identifier")
    page.click("#save-consent")
    expect(page.locator("#consent-status")).to_contain_text("active")
    expect(page.locator("main")).to_contain_text(expected[0])

    # withdrawal by identifier: the registry's search finds the person's consent
    page.goto(portal.url + "/consents")
    page.fill("#subject-id-value", INS)
    page.click("#subject-derive")
    expect(page.locator("#subject")).to_have_value(expected[0])
    page.click("form.filter button[type=submit]")
    rows = page.locator("#consents-table tbody tr")
    expect(rows).to_have_count(1)
    rows.first.locator("a").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.fill("#reason", "the person asked by phone")
    page.click("#withdraw-consent")
    expect(page.locator("#consent-status")).to_contain_text("withdrawn")
    shot(page, "27-consent-withdrawn-by-identifier")

    # the relay passes the service's refusal of a bad element on, naming it
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    refused = page.request.post(portal.url + "/consents/pseudonymise",
                                data={"blinded": "A" * 43}, headers={"X-CSRF-Token": csrf})
    assert refused.status == 422 and "/blinded/0" in refused.json()["detail"], refused.text()

    relayed = [r for r in sent if r.url.endswith("/consents/pseudonymise")]
    assert len(relayed) == 3  # NHS, INS on the form, INS on the search
    # the service served the steward, not the portal: its audit names who asked
    served = service.service.home.audit.entries(action="pseudonym.evaluate")
    assert [(e.actor, e.details["count"]) for e in served[-3:]] == [("steward1", 1)] * 3
    forms = {INS, INS[:13], GROUPED, quote_plus(GROUPED), NHS, quote_plus(NHS),
             NHS.replace(" ", "")}
    for request in sent:
        carried = request.url + (request.post_data or "")
        assert not [f for f in forms if f in carried], request.url
    portal.server.stop()  # idempotent; every byte it keeps is now on disk
    assert_absent([f.encode() for f in forms], state)

