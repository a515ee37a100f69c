"""The public indicators page in Chromium, in English and in French: the counts, the
delay chart drawn server-side as SVG, the refusals with their reasons, the audit trail
(a real portal with one permit issued and one request refused through its API)."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from tests.fixtures.browser import shot
from tests.fixtures.portal import approved_permit, bearer, request_body

pytestmark = pytest.mark.browser

REASON = "The purpose is broader than the datasets asked for"


@pytest.fixture(scope="module")
def decided(web_portal):
    """One request approved (a permit issued), one refused with its reason."""
    keycloak = web_portal.keycloak
    with httpx.Client(base_url=web_portal.url, timeout=30) as api:
        approved_permit(api, keycloak)
        alice = bearer(keycloak.token("alice"))
        rid = api.post("/v1/requests", json=request_body(title="Everything"),
                       headers=alice).json()["id"]
        assert api.post(f"/v1/requests/{rid}/submit", headers=alice).status_code == 200
        refused = api.post(f"/v1/requests/{rid}/reviews", headers=bearer(keycloak.token("rev1")),
                           json={"decision": "reject", "rationale": REASON})
        assert refused.status_code in (200, 201), refused.text
        return api.get("/v1/indicators").json()


def test_the_indicators_are_public_json(decided):
    assert decided["totals"] == {"permits_issued": 1, "runs": 0, "outputs_released": 0,
                                 "refusals": 1}
    (q,) = decided["quarters"]
    assert q["days_to_decision"]["n"] == 2 and q["days_to_decision"]["median"] is not None
    assert decided["refusals"][0]["reasons"] == [REASON]
    assert [a["party"] for a in decided["audit"]] == ["portal"]


def test_the_indicators_page_in_english_and_in_french(web_portal, decided, new_page):
    page = new_page()
    page.goto(web_portal.url + "/indicators")
    expect(page.locator("h1")).to_have_text("Indicators")
    expect(page.locator("#stat-permits-issued")).to_have_text("1")
    expect(page.locator("#stat-refusals")).to_have_text("1")
    expect(page.locator("#delay-chart rect")).to_have_count(1)  # one delay measured so far
    expect(page.locator(".legend")).to_contain_text("Days from first submission to decision")
    expect(page.locator("#refusal-reasons")).to_contain_text(REASON)
    expect(page.locator("#audit-table tr[data-party=portal]")).to_contain_text("row")
    shot(page, "indicators-en")

    french = new_page(locale="fr-BE")
    french.goto(web_portal.url + "/indicators")
    expect(french.locator("html")).to_have_attribute("lang", "fr")
    expect(french.locator("h1")).to_have_text("Indicateurs")
    expect(french.locator(".legend")).to_contain_text(
        "Jours de la première soumission à la décision")
    expect(french.locator("#delay-chart title").first).to_contain_text("90e centile")
    expect(french.locator("#audit-table tr[data-party=portal]")).to_contain_text("ligne")
    shot(french, "indicators-fr")
