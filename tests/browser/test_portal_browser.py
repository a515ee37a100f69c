"""The portal in a real browser: Debian's Chromium driven by Playwright, logging in on
the real Keycloak's page, against a real portal process. Screenshots of every page go
to test-artifacts/screenshots/."""

from __future__ import annotations

import json
import re
import time
from datetime import date
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from jwcrypto import jwk, jwt
from playwright.sync_api import Page, expect

from access_control.keycloak.bootstrap import bootstrap
from access_control.keycloak.realm import BACKCHANNEL_LOGOUT_PATH, PORTAL_CLIENT
from tests.fixtures.browser import keycloak_login, login, shot
from tests.fixtures.portal import APP_ID, request_body
from tre.portal.services import airlock
from tre.portal.web.oidc import BACKCHANNEL_LOGOUT_EVENT

pytestmark = pytest.mark.browser


def fill_request(page: Page, title: str) -> None:
    page.fill("#title", title)
    page.fill("#organisation", "KU Leuven")
    page.select_option("#purpose", "ai_training")
    page.fill("#research_question", "Can a DP-trained CNN detect paediatric pneumonia?")
    page.fill("#dataset_node_0", "hospital-a")
    page.fill("#dataset_id_0", "pneumonia")
    page.click("#add-dataset")
    page.locator("input[name=dataset_node]").nth(1).fill("hospital-b")
    page.locator("input[name=dataset_id]").nth(1).fill("pneumonia")
    page.fill("#variables", "image\nlabel")
    page.fill("#epsilon", "8")
    page.fill("#delta", "1e-5")
    page.select_option("#app_id", APP_ID)
    page.fill("#duration_days", "90")
    page.select_option("#legal_basis", "ehds_art_68_data_permit")
    page.check("input[name=data_form][value=pseudonymised]")
    page.fill("#expected_outputs", "Model weights and aggregate test metrics")
    page.fill("#ethics_reference", "EC-2026-042")


def test_researcher_requests_reviewer_approves_permit_is_public(web_portal, new_page):
    alice = new_page()
    alice.goto(web_portal.url + "/")
    shot(alice, "01-home-anonymous")
    alice.click("#login")
    keycloak_login(alice, web_portal, "alice", screenshot="02-keycloak-login")
    expect(alice.locator(".who")).to_contain_text("alice")
    shot(alice, "03-home-researcher")

    alice.goto(web_portal.url + "/requests/new")
    alice.fill("#epsilon", "lots")
    alice.fill("#delta", "0.5")
    alice.click("#save-request")
    expect(alice.locator(".form-problem")).to_be_visible()
    expect(alice.locator("#title-error")).to_have_text("This field is required.")
    expect(alice.locator("#epsilon-error")).to_have_text("Enter a number.")
    expect(alice.locator("#delta-error")).to_have_text("Must be less than 0.01.")
    shot(alice, "04-request-form-errors")

    fill_request(alice, "Pneumonia detection from chest X-rays")
    shot(alice, "05-request-form-filled")
    alice.click("#save-request")
    expect(alice.locator("#request-status")).to_contain_text("draft")
    rid = alice.url.rsplit("/", 1)[1]
    alice.click("#submit-request")
    expect(alice.locator("#request-status")).to_contain_text("submitted")
    expect(alice.locator(".flash")).to_contain_text("submitted for review")
    shot(alice, "06-request-submitted")

    rev = new_page()
    login(rev, web_portal, "rev1", "/review")
    row = rev.locator(f"tr[data-request='{rid}']")
    expect(row).to_be_visible()
    shot(rev, "07-review-queue")
    row.get_by_role("link").click()
    rev.click("#record-decision")  # nothing chosen: the form names both problems
    expect(rev.locator("#decision-error")).to_be_visible()
    expect(rev.locator("#rationale-error")).to_be_visible()
    rev.check("input[name=decision][value=approve]")
    rev.fill("#rationale", "Proportionate, DP-protected, ethics approval in place.")
    rev.fill("#cond_epsilon", "4")
    shot(rev, "08-review-decision-form")
    rev.click("#record-decision")
    expect(rev.locator(".flash")).to_contain_text("Decision recorded")
    expect(rev.locator(f"tr[data-request='{rid}']")).to_have_count(0)

    alice.goto(f"{web_portal.url}/requests/{rid}")
    expect(alice.locator("#request-status")).to_contain_text("approved")
    alice.click("#permit-link")
    expect(alice.locator("#permit-status")).to_contain_text("active")
    expect(alice.locator("#permit-token")).to_contain_text(".")
    pid = alice.url.rsplit("/", 1)[1]
    shot(alice, "09-permit-detail")
    alice.goto(web_portal.url + "/permits")
    expect(alice.locator(f"tr[data-permit='{pid}']")).to_contain_text("4.00")
    shot(alice, "10-permits")
    alice.goto(web_portal.url + "/requests")
    shot(alice, "11-my-requests")

    public = new_page()
    public.goto(web_portal.url + "/transparency")
    entry = public.locator(f"#permits-table tr[data-permit='{pid}']")
    expect(entry).to_contain_text("Pneumonia detection from chest X-rays")
    expect(entry).to_contain_text("KU Leuven")
    expect(public.locator("#stat-median")).not_to_have_text("—")
    shot(public, "12-transparency")


def test_researcher_gets_403_on_the_reviewers_queue(web_portal, new_page):
    page = new_page()
    login(page, web_portal, "bob")
    expect(page.locator("nav")).not_to_contain_text("Review queue")
    response = page.goto(web_portal.url + "/review")
    assert response.status == 403
    expect(page.locator("h1")).to_have_text("Access denied")
    expect(page.locator(".error-message")).to_contain_text("roles do not allow")
    shot(page, "13-forbidden-review-queue")
    assert page.goto(web_portal.url + "/audit").status == 403


def test_the_login_uses_pkce_s256_and_a_state_that_works_once(web_portal, new_page):
    page = new_page()
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    login(page, web_portal, "alice", "/requests")
    assert page.url == web_portal.url + "/requests"
    [authorize] = [u for u in seen if "/protocol/openid-connect/auth?" in u]
    asked = parse_qs(urlsplit(authorize).query)
    assert asked["code_challenge_method"] == ["S256"] and asked["response_type"] == ["code"]
    assert len(asked["code_challenge"][0]) == 43  # base64url of a SHA-256 digest
    assert asked["state"][0] and asked["nonce"][0]
    [callback] = [u for u in seen if u.startswith(web_portal.url + "/auth/callback?")]
    assert parse_qs(urlsplit(callback).query)["state"] == asked["state"]
    for browser in (page, new_page()):  # the same browser, and one that copied the URL
        replayed = browser.goto(callback)
        assert replayed.status == 400
        expect(browser.locator(".error-message")).to_contain_text("already used")
    page.goto(web_portal.url + "/requests")
    expect(page.locator(".who")).to_contain_text("alice")  # the replay ended nothing


def test_a_form_posted_without_the_csrf_token_is_refused(web_portal, new_page):
    page = new_page()
    login(page, web_portal, "alice", "/requests/new")
    fill_request(page, "Request whose form lost its CSRF token")
    page.evaluate("document.querySelector('#request-form input[name=csrf_token]').remove()")
    with page.expect_navigation():
        page.click("#save-request")
    assert page.locator("h1").inner_text() == "Access denied"
    expect(page.locator(".error-message")).to_contain_text("security token")
    shot(page, "14-csrf-refused")
    forged = page.request.post(web_portal.url + "/requests/new",
                               form={"title": "forged", "csrf_token": "not-the-token"},
                               max_redirects=0)
    assert forged.status == 403
    page.goto(web_portal.url + "/requests")
    expect(page.locator("main")).not_to_contain_text("lost its CSRF token")
    # the API refuses a cookie-only write too (no X-CSRF-Token header)
    api = page.request.post(web_portal.url + "/v1/requests", data=json.dumps(request_body()),
                            headers={"content-type": "application/json"})
    assert api.status == 401


def test_french_for_a_french_browser_and_the_switch(web_portal, new_page):
    page = new_page(locale="fr-BE")
    page.goto(web_portal.url + "/")
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    expect(page.locator("nav")).to_contain_text("Registre de transparence")
    expect(page.locator("#login")).to_have_text("Se connecter")
    page.goto(web_portal.url + "/transparency")
    expect(page.locator("h1")).to_have_text("Registre de transparence")
    shot(page, "15-transparency-fr")
    page.click("#login")
    keycloak_login(page, web_portal, "alice")
    page.goto(web_portal.url + "/requests/new")
    page.click("#save-request")
    expect(page.locator("#title-error")).to_have_text("Ce champ est obligatoire.")
    shot(page, "16-request-form-fr")

    page.click(".lang button[value=en]")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("h1")).to_have_text("New request")
    page.goto(web_portal.url + "/transparency")  # the choice sticks over Accept-Language
    expect(page.locator("h1")).to_have_text("Transparency register")
    page.click(".lang button[value=fr]")
    expect(page.locator("h1")).to_have_text("Registre de transparence")


def test_logout_ends_the_keycloak_session(web_portal, new_page):
    page = new_page()
    login(page, web_portal, "alice", "/requests")
    page.click("#logout")
    page.wait_for_url(web_portal.url + "/")
    expect(page.locator("#login")).to_be_visible()
    assert page.goto(web_portal.url + "/requests").url.startswith(web_portal.keycloak.base_url)
    expect(page.locator("#username")).to_be_visible()  # Keycloak asks again: its SSO ended
    shot(page, "17-after-logout-keycloak-asks-again")


@pytest.fixture
def backchannel_logout(web_portal, keycloak):
    """The realm told (by the bootstrap, as an operator would) to end this portal's web
    sessions when a Keycloak session ends; the shared realm is put back afterwards."""
    bootstrap(keycloak.admin, portal_url=web_portal.url)
    try:
        yield
    finally:
        cid = keycloak.admin.get_client_id(PORTAL_CLIENT)
        client = keycloak.admin.get_client(cid)
        client["attributes"]["backchannel.logout.url"] = ""
        keycloak.admin.update_client(cid, client)


def test_a_keycloak_session_ended_elsewhere_ends_the_web_session(
        web_portal, new_page, keycloak, backchannel_logout):
    keycloak.ensure_user("lea", roles=["researcher"])
    page = new_page()
    login(page, web_portal, "lea", "/requests")
    store = web_portal.app.state.web_auth.store

    def sessions_of_lea() -> int:
        return sum(1 for pool in store._pools.values() for s in pool.values()
                   if s.principal is not None and s.principal.username == "lea")

    assert sessions_of_lea() == 1
    keycloak.admin.user_logout(keycloak.admin.get_user_id("lea"))  # an administrator's act
    deadline = time.monotonic() + 30
    while sessions_of_lea() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sessions_of_lea() == 0
    page.goto(web_portal.url + "/")
    expect(page.locator("#login")).to_be_visible()
    assert page.goto(web_portal.url + "/requests").url.startswith(keycloak.base_url)


def test_forged_logout_tokens_end_nothing(web_portal, new_page, keycloak):
    page = new_page()
    login(page, web_portal, "alice", "/requests")
    store = web_portal.app.state.web_auth.store
    before = len(store)
    signed_by_us = jwt.JWT(header={"alg": "RS256", "kid": "ours"}, claims={
        "iss": f"{keycloak.base_url}/realms/{keycloak.realm}", "aud": PORTAL_CLIENT,
        "iat": int(time.time()), "sid": "any", "events": {BACKCHANNEL_LOGOUT_EVENT: {}}})
    signed_by_us.make_signed_token(jwk.JWK.generate(kty="RSA", size=2048, kid="ours"))
    for token in (signed_by_us.serialize(), "not-a-jwt", ""):
        r = httpx.post(web_portal.url + BACKCHANNEL_LOGOUT_PATH, data={"logout_token": token})
        assert r.status_code in (400, 422), r.text
        assert r.headers.get("cache-control") == "no-store" or r.status_code == 422
    assert len(store) == before
    page.goto(web_portal.url + "/requests")
    expect(page.locator(".who")).to_contain_text("alice")


def _permit_for(web_portal, user: str = "alice") -> dict:
    rid = web_portal.api("POST", "/v1/requests", user, json=request_body()).json()["id"]
    web_portal.api("POST", f"/v1/requests/{rid}/submit", user)
    pid = web_portal.api("POST", f"/v1/requests/{rid}/reviews", "rev2", json={
        "decision": "approve", "rationale": "sound and proportionate"}).json()["permit_id"]
    return web_portal.api("GET", f"/v1/permits/{pid}", user).json()


def test_two_output_checkers_release_and_the_researcher_downloads(web_portal, new_page):
    permit = _permit_for(web_portal)
    metrics = {"rounds": [{"round": 1, "auc": 0.91, "examples": 1200}],
               "test": {"auc": 0.93, "accuracy": 0.86, "examples": 624}}
    attest = [{"node_id": n, "dataset_id": "pneumonia", "epsilon": 3.1, "delta": 1e-5,
               "accountant": "rdp", "noise_multiplier": 1.1, "mia_advantage": 0.02}
              for n in ("hospital-a", "hospital-b")]
    out = airlock.submit_output(web_portal.app.state.portal, run_id="run_browser",
                                permit=permit, attestations=attest,
                                files={"model.pt": b"\x80weights",
                                       "metrics.json": json.dumps(metrics).encode()})
    oid = out["id"]

    alice = new_page()
    login(alice, web_portal, "alice", f"/outputs/{oid}")
    expect(alice.locator("#output-status")).to_contain_text("pending")
    expect(alice.locator("[data-download]")).to_have_count(0)
    expect(alice.locator("#output-decision")).to_have_count(0)

    for n, checker in enumerate(("chk1", "chk2"), start=1):
        page = new_page()
        login(page, web_portal, checker, "/outputs")
        expect(page.locator(f"#airlock-queue tr[data-output='{oid}']")).to_be_visible()
        if n == 1:
            shot(page, "18-airlock-queue")
        page.click(f"#airlock-queue tr[data-output='{oid}'] a")
        expect(page.locator("#checks li.pass")).to_have_count(4)
        page.check("input[name=decision][value=approve]")
        page.fill("#rationale", f"{checker}: aggregates only, DP attested, counts >= 10")
        if n == 1:
            shot(page, "19-output-check-form")
        page.click("#record-output-decision")
        expect(page.locator("#output-status")).to_contain_text(
            "approved once" if n == 1 else "released")
        expect(page.locator("#output-decision")).to_have_count(0)

    alice.reload()
    expect(alice.locator("#output-status")).to_contain_text("released")
    shot(alice, "20-output-released")
    with alice.expect_download() as info:
        alice.click("[data-download='model.pt']")
    assert info.value.suggested_filename == "model.pt"
    assert Path(info.value.path()).read_bytes() == b"\x80weights"
    entries = web_portal.api("GET", "/v1/audit", "auditor1",
                             params={"limit": 1000}).json()["entries"]
    assert any(e["action"] == "output.download" and e["object_id"] == oid
               and e["actor"] == "alice" for e in entries)


def test_auditor_pages_the_log_and_verifies_the_chain(web_portal, new_page):
    _permit_for(web_portal, "bob")
    page = new_page()
    login(page, web_portal, "auditor1", "/audit?limit=5")
    expect(page.locator("#audit-table tbody tr")).to_have_count(5)
    expect(page.locator("#audit-range")).to_contain_text("Entries 1–5 of")
    page.click("#next-page")
    expect(page.locator("#audit-range")).to_contain_text("Entries 6–10 of")
    page.click("#verify-chain")
    expect(page.locator("#verdict")).to_contain_text("The chain is intact")
    shot(page, "21-audit-verified")
    bad = page.goto(web_portal.url + "/audit?limit=0")
    assert bad.status == 422
    expect(page.locator("h1")).to_have_text("Invalid input")
    expect(page.locator(".error-message")).to_contain_text("limit")


def test_reviewer_revokes_a_permit_and_the_register_says_so(web_portal, new_page):
    permit = _permit_for(web_portal, "bob")
    page = new_page()
    login(page, web_portal, "rev1", f"/permits/{permit['id']}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.fill("#reason", "ok")
    page.click("#revoke-permit")
    expect(page.locator("#reason-error")).to_have_text("Enter at least 5 characters.")
    page.once("dialog", lambda dialog: dialog.accept())
    page.fill("#reason", "Ethics approval lapsed")
    page.click("#revoke-permit")
    expect(page.locator("#permit-status")).to_contain_text("revoked")
    page.goto(web_portal.url + "/transparency")
    row = page.locator(f"#permits-table tr[data-permit='{permit['id']}']")
    expect(row).to_contain_text("revoked")
    expect(row).to_contain_text("Ethics approval lapsed")


def test_steward_records_and_withdraws_a_consent(web_portal, new_page):
    page = new_page()
    login(page, web_portal, "steward1", "/consents/new")
    page.fill("#subject", "ps_browser_subject_001")
    page.click("#save-consent")
    expect(page.locator("#purposes-error")).to_be_visible()
    page.check("input[name=purposes][value=scientific_research]")
    page.check("input[name=purposes][value=ai_training]")
    page.fill("#valid_to", date(date.today().year + 5, 12, 31).isoformat())
    shot(page, "22-consent-form")
    page.click("#save-consent")
    expect(page.locator("#consent-status")).to_contain_text("active")
    page.once("dialog", lambda dialog: dialog.accept())
    page.fill("#reason", "subject asked by phone")
    page.click("#withdraw-consent")
    expect(page.locator("#consent-status")).to_contain_text("withdrawn")
    expect(page.locator("#history-table tbody tr")).to_have_count(2)
    shot(page, "23-consent-withdrawn")
    page.goto(web_portal.url + "/consents")
    expect(page.locator("#consents-table")).to_contain_text("ps_browser_subject_001")
    shot(page, "24-consent-registry")

    exported = page.request.get(web_portal.url + "/v1/consents/fhir")  # session GET on the API
    assert exported.ok and "ps_browser_subject_001" in exported.text()
    page.goto(web_portal.url + "/consents/import")
    page.fill("#fhir_text", "{not json")
    page.click("#import-submit")
    expect(page.locator("#import-problem")).to_contain_text("not valid JSON")
    page.fill("#fhir_text", exported.text())
    page.click("#import-submit")
    expect(page.locator("#import-result")).to_contain_text("Unchanged")
    shot(page, "25-consent-import")


def _session_of(page: Page, web_portal):
    auth = web_portal.app.state.web_auth
    value = next(c["value"] for c in page.context.cookies() if c["name"] == "tre_session")
    return auth.store.get(auth.codec.load(value))


def test_tokens_are_refreshed_and_a_refused_refresh_ends_the_session(web_portal, new_page):
    page = new_page()
    login(page, web_portal, "bob", "/requests")
    sess = _session_of(page, web_portal)
    first = sess.access_token
    sess.access_exp = 0  # as if five minutes had passed
    page.goto(web_portal.url + "/requests")
    expect(page.locator(".who")).to_contain_text("bob")
    assert sess.logged_in and sess.access_token != first
    sess.refresh_token, sess.access_exp = "not-a-refresh-token", 0
    page.goto(web_portal.url + "/requests")
    assert not sess.logged_in, "Keycloak refused the refresh: the portal session must end"
    # Keycloak's own session is still alive, so logging in again needs no password
    expect(page.locator(".who")).to_contain_text("bob")
    assert _session_of(page, web_portal).id != sess.id


def test_catalogue_shows_published_datasets(web_portal, new_page):
    token = web_portal.keycloak.client_token("hospital-a")
    resp = httpx.post(web_portal.url + "/v1/catalogue/datasets",
                      headers={"Authorization": f"Bearer {token}"}, json={
                          "hospital_id": "hospital-a", "dataset_id": "pneumonia",
                          "kind": "imaging", "title": "Paediatric chest X-rays",
                          "descriptor": {"modality": "CR", "subjects": "<10",
                                         "labels": {"counts": {"normal": 1340,
                                                               "pneumonia": 3875}}}})
    assert resp.status_code == 201, resp.text
    page = new_page()
    login(page, web_portal, "alice", "/catalogue")
    expect(page.locator(".tile.dataset")).to_contain_text("Paediatric chest X-rays")
    shot(page, "26-catalogue")
    page.click("text=Paediatric chest X-rays")
    expect(page.locator("main")).to_contain_text("3875")
    page.click("text=Request access")
    expect(page.locator("#dataset_node_0")).to_have_value("hospital-a")
    assert re.search(r"/requests/new\?dataset=", page.url)
