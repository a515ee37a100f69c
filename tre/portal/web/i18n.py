"""English and French for the web UI, from gettext catalogues.

Templates and pages write English text through `_()`; the words shown come from
`locale/<lang>/LC_MESSAGES/messages.po`, read with Babel when first needed (the
first users are Belgian). Reading the .po itself, rather than a compiled .mo,
means there is no build step: a translator edits the .po, restarts the portal and
sees the change. The `en` catalogue gives English labels to the identifiers the
services use (`changes_requested` → "changes requested"); English text is its own
msgid. The language is the one chosen with the switch (a cookie), else the best
match of the browser's Accept-Language, else English. A unit test extracts every
msgid with Babel and checks that the French catalogue translates it.

Jinja2's i18n extension is not installed: `install_gettext_translations` puts one
language on the Environment, which every request shares whatever its language, and
its new-style gettext formats with `%`. `pages.render` passes the request's `_`
instead, and Jinja2's Babel extractor finds `_()` calls without the extension.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from io import BytesIO
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LANGUAGES = ("en", "fr")
DEFAULT_LANGUAGE = "en"
LANG_COOKIE = "tre_lang"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"

Translator = Callable[..., str]


def negotiate(accept_language: str | None, cookie: str | None) -> str:
    """The cookie wins; otherwise the highest-q supported language of the header."""
    if cookie in LANGUAGES:
        return cookie
    best, best_q = DEFAULT_LANGUAGE, 0.0
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        q -= i * 1e-6  # earlier tags win ties, as browsers intend
        if primary in LANGUAGES and q > best_q:
            best, best_q = primary, q
    return best


def N_(text: str) -> str:
    """Marks a string for `pybabel extract` where `_()` is later called on a variable."""
    return text


# Identifiers of the services (request and permit states, purposes, legal bases…)
# reach `_()` as variables, which extraction cannot see; naming them here keeps them
# in messages.pot, so `pybabel update` does not drop their labels as obsolete.
IDENTIFIERS = (
    # request, permit, run, consent and output states
    N_("draft"), N_("submitted"), N_("in_review"), N_("approved"), N_("rejected"),
    N_("changes_requested"), N_("withdrawn"), N_("active"), N_("expired"),
    N_("revoked"), N_("exhausted"), N_("pending"), N_("approved_once"), N_("released"),
    N_("queued"), N_("running"), N_("completed"), N_("failed"), N_("cancelled"),
    # review decisions
    N_("approve"), N_("reject"), N_("request_changes"),
    # indicators of the transparency register
    N_("days_to_decision"), N_("days_permit_to_first_run"), N_("days_run_to_release"),
    # purposes (EHDS secondary use) and legal bases
    N_("public_interest_health"), N_("policy_making"), N_("statistics"),
    N_("education"), N_("scientific_research"), N_("ai_training"),
    N_("improvement_of_care"),
    N_("ehds_art_68_data_permit"), N_("gdpr_6_1_e_9_2_i"), N_("gdpr_6_1_e_9_2_j"),
    N_("gdpr_6_1_a_9_2_a"),
    # data forms and dataset kinds
    N_("pseudonymised"), N_("anonymised"), N_("imaging"), N_("clinical"),
    # changes to a consent
    N_("record"), N_("withdraw"), N_("reconsent"), N_("update"),
    # automated checks of an output
    N_("dp_attestation"), N_("aggregates_only"), N_("small_counts"),
    N_("membership_inference"),
)


@cache
def catalogue(lang: str) -> Translations:
    """The language's .po, compiled in memory (fuzzy entries are left out, as msgfmt does)."""
    with (LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po").open("rb") as po:
        messages = read_po(po, locale=lang, domain=DOMAIN)
    mo = BytesIO()
    write_mo(mo, messages, use_fuzzy=False)
    mo.seek(0)
    return Translations(mo, domain=DOMAIN)


def translator(lang: str) -> Translator:
    """`_("text", name=value)`: the catalogue's text (else the English msgid), then
    `str.format`, so placeholders read `{name}` in every language."""
    gettext = catalogue(lang if lang in LANGUAGES else DEFAULT_LANGUAGE).gettext

    def _(text: str, /, **values: object) -> str:
        out = gettext(text) if text else text  # gettext("") is the catalogue's header
        return out.format(**values) if values else out

    return _
