"""Web UI pieces that need no browser and no Keycloak: language choice, the gettext
catalogues' coverage, PKCE, session cookies, CSRF refusals, form error mapping."""

from __future__ import annotations

import base64
import hashlib
import io
import re
import stat
import tarfile
from functools import cache
from pathlib import Path

import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from fastapi.testclient import TestClient

from tre.core.schemas import Purpose
from tre.portal.app import create_app
from tre.portal.schemas import DataForm, DatasetKind, Decision, LegalBasis, RequestState, RunIn
from tre.portal.services import indicators
from tre.portal.settings import PortalSettings
from tre.portal.web import forms, i18n, pages, vendor
from tre.portal.web.session import CookieCodec, SessionStore, load_or_create_secret

pytestmark = pytest.mark.unit
WEB = Path(pages.__file__).parent


@pytest.mark.parametrize(("header", "cookie", "expected"), [
    ("fr-BE,fr;q=0.9,en;q=0.8", None, "fr"),
    ("en-US,en;q=0.9,fr;q=0.8", None, "en"),
    ("de-DE,de;q=0.9,fr;q=0.5", None, "fr"),
    ("nl-BE,nl;q=0.9", None, "en"),
    ("en;q=0.2,fr;q=0.7", None, "fr"),
    ("fr", "en", "en"),
    ("en", "fr", "fr"),
    ("en", "xx", "en"),
    ("garbage;;q=;,", None, "en"),
    (None, None, "en"),
])
def test_language_negotiation(header, cookie, expected):
    assert i18n.negotiate(header, cookie) == expected


PORTAL = WEB.parent  # babel.cfg's paths are relative to tre/portal/


@cache
def _extracted() -> frozenset[str]:
    """Every msgid of the pages, found as `pybabel extract` finds it: Babel's python
    extractor over web/*.py and Jinja2's over the templates, through babel.cfg."""
    with (PORTAL / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg, str(PORTAL / "babel.cfg"))
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            PORTAL, method_map, options_map):
        found.update(message if isinstance(message, tuple) else (message,))
    return frozenset(found)


def _catalogue(name: str) -> Catalog:
    path = i18n.LOCALE_DIR / (f"{name}/LC_MESSAGES/messages.po" if name != "pot"
                              else "messages.pot")
    with path.open("rb") as po:
        return read_po(po)


def test_every_text_of_the_pages_has_a_french_translation():
    used = _extracted()
    assert len(used) > 150, "the extraction found too little: is it still working?"
    assert {"Access denied", "Something went wrong", "approved_once"} <= used
    french = _catalogue("fr")
    missing = sorted(s for s in used if s not in french or not french[s].string)
    assert not missing, f"no French for: {missing}"


@pytest.mark.parametrize("name", ["fr", "en", "pot"])
def test_catalogues_match_the_extraction_with_nothing_fuzzy_or_obsolete(name):
    catalogue = _catalogue(name)
    fuzzy = sorted(m.id for m in catalogue if m.id and m.fuzzy)
    assert not fuzzy, f"fuzzy in {name}: {fuzzy}"
    assert not catalogue.obsolete, f"obsolete in {name}: {sorted(catalogue.obsolete)}"
    listed = {m.id for m in catalogue if m.id}
    used = _extracted()
    assert listed == used, ("run pybabel extract and update (README): "
                            f"stale {sorted(listed - used)}, new {sorted(used - listed)}")


def test_every_identifier_shown_has_an_english_and_a_french_label():
    shown = {*map(str, Purpose), *map(str, LegalBasis), *map(str, DataForm),
             *map(str, RequestState), *map(str, Decision), *map(str, DatasetKind),
             "active", "expired", "revoked", "exhausted", "pending", "approved_once",
             "released", "dp_attestation", "aggregates_only", "small_counts",
             "membership_inference", "record", "withdraw", "reconsent", "update",
             *indicators.DELAYS}
    assert not shown - set(i18n.IDENTIFIERS), shown - set(i18n.IDENTIFIERS)
    for name in ("en", "fr"):
        catalogue = _catalogue(name)
        unlabelled = {s for s in shown if s not in catalogue or not catalogue[s].string}
        assert not unlabelled, f"no {name} label for {sorted(unlabelled)}"
    assert i18n.translator("en")("changes_requested") == "changes requested"
    assert i18n.translator("fr")("Signed in as {name}", name="Ana") == "Connecté·e en tant que Ana"


def test_french_placeholders_match_the_english_ones():
    for message in _catalogue("fr"):
        if message.id and message.string:
            assert set(re.findall(r"{(\w+)}", message.id)) == \
                set(re.findall(r"{(\w+)}", message.string)), message.id


def test_pkce_s256_matches_rfc_7636_appendix_b():
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # what the login sends (Authlib)
    assert create_s256_code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_session_secret_is_generated_once_with_mode_0600(tmp_path):
    settings = PortalSettings(state_dir=tmp_path / "state")
    first = load_or_create_secret(settings)
    assert len(first) >= 32 and load_or_create_secret(settings) == first
    path = tmp_path / "state" / "web-session-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    given = PortalSettings(state_dir=tmp_path / "other", session_secret="s" * 40)
    assert load_or_create_secret(given) == b"s" * 40


def test_cookie_signature_and_session_rotation():
    codec = CookieCodec(b"k" * 32)
    store = SessionStore(idle_s=60)
    sess = store.create()
    value = codec.dump(sess.id)
    assert codec.load(value) == sess.id
    assert codec.load(value[:-2] + "xx") is None
    assert CookieCodec(b"other-key" * 4).load(value) is None
    fresh = store.rotate(sess)
    assert fresh.id != sess.id and fresh.csrf != sess.csrf
    assert store.get(sess.id) is None and store.get(fresh.id) is fresh


def test_a_flood_of_anonymous_sessions_never_evicts_a_logged_in_one():
    store = SessionStore(idle_s=60, max_sessions=10, max_anonymous=5)
    user = store.rotate(store.create())
    for _ in range(50):
        store.create()
    assert store.get(user.id) is user and len(store) == 6


def test_idle_sessions_expire():
    store = SessionStore(idle_s=60)
    sess = store.create()
    sess.last_seen -= 61
    assert store.get(sess.id) is None


@pytest.mark.parametrize(("value", "expected"), [
    ("/requests/x?y=1", "/requests/x?y=1"), ("https://evil.example/", "/"),
    ("//evil.example/", "/"), ("/\\evil.example", "/"), ("", "/"), (None, "/"),
])
def test_redirect_targets_stay_on_the_portal(value, expected):
    assert pages.safe_next(value) == expected


def test_form_errors_name_the_fields_in_the_users_language():
    values = {"title": "", "organisation": "KU Leuven", "purpose": "marketing",
              "research_question": "Why?", "epsilon": "beaucoup", "delta": "0,5",
              "app_id": "app", "duration_days": "90", "min_hospitals": "1",
              "legal_basis": "gdpr_6_1_e_9_2_j", "data_form": "", "expected_outputs": "x",
              "ethics_reference": "", "variables": "age\n\nsex\n",
              "datasets": [{"node_id": "hospital-a", "dataset_id": "bad id!"}]}
    fields, errors = forms.parse_request(values, i18n.translator("fr"))
    assert fields is None
    assert errors["title"] == ["Ce champ est obligatoire."]
    assert errors["purpose"] == ["Choisissez une des options."]
    assert errors["epsilon"] == ["Saisissez un nombre."]
    assert errors["delta"] == ["Doit être inférieur à 0.01."]
    assert errors["data_form"] == ["Ce champ est obligatoire."]
    assert "datasets.0.dataset_id" in errors
    good = values | {"title": "T", "purpose": "ai_training", "epsilon": "2,5", "delta": "1e-5",
                     "data_form": "anonymised",
                     "datasets": [{"node_id": "hospital-a", "dataset_id": "pneumonia"}]}
    fields, errors = forms.parse_request(good, i18n.translator("en"))
    assert not errors and fields.epsilon == 2.5 and fields.variables == ["age", "sex"]


@pytest.fixture
def offline_portal(tmp_path):
    """The portal without a reachable Keycloak: enough for anonymous pages and CSRF."""
    settings = PortalSettings(state_dir=tmp_path / "portal", keycloak_url="http://127.0.0.1:9")
    with TestClient(create_app(settings)) as client:
        yield client


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def test_posts_without_the_session_token_are_refused(offline_portal):
    home = offline_portal.get("/")
    assert home.status_code == 200
    cookie = home.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    for data in ({"lang": "fr"}, {"lang": "fr", "csrf_token": "forged"}):
        refused = offline_portal.post("/lang", data=data, follow_redirects=False)
        assert refused.status_code == 403 and "security token" in refused.text
        assert "tre_lang" not in refused.headers.get("set-cookie", "")
    ok = offline_portal.post("/lang", data={"lang": "fr", "csrf_token": _csrf(home.text),
                                            "next": "/transparency"}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/transparency"
    page = offline_portal.get("/transparency")
    assert "Registre de transparence" in page.text and 'lang="fr"' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp


def test_a_stranger_without_session_is_refused_too(tmp_path):
    settings = PortalSettings(state_dir=tmp_path / "p", keycloak_url="http://127.0.0.1:9")
    with TestClient(create_app(settings)) as client:
        refused = client.post("/logout", data={"csrf_token": "x"}, follow_redirects=False)
        assert refused.status_code == 403


def test_pages_send_anonymous_users_to_login(offline_portal):
    for path in ("/requests", "/requests/new", "/review", "/permits", "/audit", "/outputs",
                 "/catalogue", "/consents", "/consents/import"):
        resp = offline_portal.get(path, follow_redirects=False)
        assert resp.status_code == 303, path
        assert resp.headers["location"].startswith("/login?next=%2F"), path


def test_secure_cookie_behind_tls(tmp_path):
    settings = PortalSettings(state_dir=tmp_path / "p", keycloak_url="http://127.0.0.1:9",
                              public_url="https://tre.example.org")
    with TestClient(create_app(settings), base_url="https://tre.example.org") as client:
        assert "Secure" in client.get("/").headers["set-cookie"]


def test_run_progress_plot_draws_auc_and_epsilon_per_hospital():
    from tre.portal.web.runs import progress_png

    run = {"rounds": [
        {"round": r, "evaluate": {"auc": 0.8 + r / 100},
         "nodes": [{"hospital_id": h, "epsilon": r * 2.5, "status": "trained"}
                   for h in ("hospital-a", "hospital-b")] + [{"node_id": 9, "reason": "x"}]}
        for r in (1, 2, 3)]}
    png = progress_png(run, {"auc": "AUC", "epsilon": "ε", "round": "round"})
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert progress_png({"rounds": []}, {"auc": "a", "epsilon": "e", "round": "r"})


def test_typed_numbers_reach_the_strict_models_as_numbers():
    assert forms.number("3") == 3 and isinstance(forms.number("3"), int)
    assert forms.number("2,5") == 2.5 and forms.number("1\u202f000") == 1000
    assert forms.number("beaucoup") == "beaucoup"  # the model names it
    body, errors = forms.parse(RunIn, {"permit_id": "pmt_1", "rounds": forms.number("4"),
                                       "lr": forms.number("0,1")}, i18n.translator("en"))
    assert not errors and body.rounds == 4 and body.lr == 0.1


def _npm_tarball(files: dict[str, str]) -> tuple[bytes, str]:
    """A gzipped npm-style tarball of `files` and its `dist.integrity`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tarball = buffer.getvalue()
    return tarball, "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()


def test_vendored_modules_import_each_other_by_relative_paths(tmp_path, monkeypatch):
    """A browser resolves no bare `@noble/...` specifier without an inline import map,
    which the CSP forbids: unpacking makes every one relative, keeps only the ES modules,
    LICENSE and package.json, and marks the folder complete last."""
    tarball, integrity = _npm_tarball({
        "package/package.json": "{}", "package/LICENSE": "MIT", "package/README.md": "",
        "package/ed25519.js": "import { sha512 } from '@noble/hashes/sha2.js';\n"
                              'import { createOPRF } from "./abstract/oprf.js";\n',
        "package/abstract/oprf.js": "import { abytes } from '@noble/hashes/utils.js';\n"
                                    "export * from '@noble/curves/utils.js';\n",
        "package/src/ed25519.ts": "", "package/ed25519.d.ts": "",
        "package/../escape.js": "",
    })
    package = vendor.NpmPackage("@noble/curves", "9.9.9", integrity)
    monkeypatch.setattr(vendor, "VENDOR", tmp_path / "vendor")
    monkeypatch.setattr(vendor, "PACKAGES", (package,))
    assert vendor.missing() == ["@noble/curves@9.9.9"]
    vendor.unpack(package, vendor.check_integrity(package, tarball))
    assert vendor.missing() == []
    folder = tmp_path / "vendor" / "@noble" / "curves"
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        ".tre-verified", "LICENSE", "abstract/oprf.js", "ed25519.js", "package.json"]
    assert (folder / "ed25519.js").read_text() == (
        "import { sha512 } from '../hashes/sha2.js';\n"
        'import { createOPRF } from "./abstract/oprf.js";\n')
    assert (folder / "abstract" / "oprf.js").read_text() == (
        "import { abytes } from '../../hashes/utils.js';\n"
        "export * from '../utils.js';\n")
    assert not list(tmp_path.rglob("escape.js"))


def test_a_tarball_unlike_its_pin_is_refused():
    tarball, _ = _npm_tarball({"package/package.json": "{}"})
    _, other = _npm_tarball({"package/package.json": "{ }"})
    with pytest.raises(vendor.VendorError, match="does not match the integrity pinned"):
        vendor.check_integrity(vendor.NpmPackage("@noble/hashes", "9.9.9", other), tarball)


def test_a_portal_missing_its_vendor_folder_warns_at_start(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(vendor, "VENDOR", tmp_path / "no-vendor")
    settings = PortalSettings(state_dir=tmp_path / "p", keycloak_url="http://127.0.0.1:9",
                              pseudonymiser_url="http://127.0.0.1:9")
    create_app(settings)
    assert "@noble/curves@2.4.0, @noble/hashes@2.4.0 not in" in caplog.text
    assert "python -m tre.portal.web.vendor" in caplog.text
