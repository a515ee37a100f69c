"""The catalogue's dataset page shows a published synthetic version: gate checks, plots
and download links that work with the browser's session (and are audited)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from federation.node.service import publish
from federation.node.synthesis import releasable
from tests.consent.conftest import node_client
from tests.fixtures.browser import login, shot
from tests.synthetic_release.conftest import DATASET

pytestmark = pytest.mark.browser


def test_dataset_page_offers_the_synthetic_version(synthesised, web_portal, new_page, keycloak):
    client = node_client(keycloak, web_portal.url, "hospital-a")
    assert publish(synthesised.home, [DATASET], client=client)[0]["synthetic"]["published"]
    release = releasable(synthesised.home, DATASET)

    page = new_page()
    login(page, web_portal, "alice", f"/catalogue/hospital-a/{DATASET}")
    section = page.locator("#synthetic")
    expect(section).to_contain_text("Synthetic data")
    expect(page.locator("#gate-checks li.pass")).to_have_count(10)  # privacy and utility
    images = section.locator("img")
    expect(images).to_have_count(len(release.plots))
    page.wait_for_function("Array.from(document.querySelectorAll('#synthetic img'))"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    shot(page, "synthetic-dataset-page")
    with page.expect_download() as info:
        page.click("[data-download='parquet']")
    assert Path(info.value.path()).read_bytes() == release.table
    assert info.value.suggested_filename == f"hospital-a_{DATASET}_synthetic.parquet"
    entries = web_portal.api("GET", "/v1/audit", "auditor1",
                             params={"limit": 1000}).json()["entries"]
    assert any(e["action"] == "synthetic.download" and e["actor"] == "alice" for e in entries)

    steward = new_page()
    login(steward, web_portal, "steward1", f"/catalogue/hospital-a/{DATASET}")
    expect(steward.locator("#synthetic")).to_contain_text("Synthetic data")
    expect(steward.locator("[data-download]")).to_have_count(0)


def test_a_withdrawn_release_is_shown_withdrawn_without_downloads(synthesised, web_portal,
                                                                   new_page, keycloak):
    client = node_client(keycloak, web_portal.url, "hospital-a")
    release_id = publish(synthesised.home, [DATASET], client=client)[0]["synthetic"][
        "release_id"]
    reason = "a data subject withdrew consent for research"
    resp = web_portal.api("POST", f"/v1/catalogue/synthetic/{release_id}/withdraw",
                          "steward1", json={"reason": reason})
    assert resp.status_code == 200, resp.text

    page = new_page()
    login(page, web_portal, "alice", f"/catalogue/hospital-a/{DATASET}")
    section = page.locator("#synthetic[data-status='withdrawn']")
    expect(section).to_contain_text("Synthetic data withdrawn")
    expect(section).to_contain_text("steward1")
    expect(section).to_contain_text(reason)
    expect(page.locator("[data-download]")).to_have_count(0)
    expect(page.locator("#synthetic img")).to_have_count(0)
    shot(page, "synthetic-withdrawn")
    page.goto(f"{web_portal.url}/catalogue")
    expect(page.locator(".synthetic-status[data-status='withdrawn']")).to_contain_text(
        "Synthetic data withdrawn")

    french = new_page(locale="fr-BE")
    login(french, web_portal, "alice", f"/catalogue/hospital-a/{DATASET}")
    expect(french.locator("#synthetic")).to_contain_text("Données synthétiques retirées")
