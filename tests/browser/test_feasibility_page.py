"""The feasibility form in Chromium: field errors named, no dataset → a clear answer."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.fixtures.browser import login, shot

pytestmark = pytest.mark.browser


def test_feasibility_form_validates_and_explains(web_portal, new_page):
    page = new_page()
    login(page, web_portal, "alice", "/feasibility")
    expect(page.locator("h1")).to_contain_text("Feasibility")
    page.fill("input[name=age_min]", "80")
    page.fill("input[name=age_max]", "20")
    page.click("#feasibility-form button[type=submit]")
    expect(page.locator("#feasibility-problem")).to_contain_text("age_min is above age_max")
    page.fill("input[name=age_min]", "old")
    page.click("#feasibility-form button[type=submit]")
    expect(page.locator(".field-error").first).to_be_visible()
    page.fill("input[name=age_min]", "")
    page.fill("input[name=age_max]", "")
    page.fill("input[name=label]", "1")
    page.click("#feasibility-form button[type=submit]")
    expect(page.locator("#feasibility-problem")).to_contain_text(
        "no hospital published a dataset")
    shot(page, "feasibility-form")
    reviewer = new_page()
    login(reviewer, web_portal, "rev1")
    assert reviewer.goto(f"{web_portal.url}/feasibility").status == 403
