"""`tre consent record | withdraw | import`: a steward's consent work, by identifier.

A data-altruism organisation knows people by a national identifier (e.g. the INS);
the portal holds pseudonyms only. These commands turn an identifier into the
federation pseudonym on the steward's machine, through the pseudonymisation
service's oblivious PRF (the service never sees the identifier), and send the
portal nothing else. The steward's `tre login` token authenticates both calls.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from pseudonymisation.client import PseudonymClient, PseudonymisationError
from pseudonymisation.identifiers import Identifier, IdentifierError
from tre.cli.common import PortalCalls, check_portal_url, console, fail, print_json
from tre.cli.login_cmd import bearer_token
from tre.core.schemas import PSEUDONYM_SYSTEM, Purpose

app = typer.Typer(no_args_is_help=True)

PortalOpt = typer.Option(..., "--portal", envvar="TRE_PORTAL_URL", help="portal base URL")
ServiceOpt = typer.Option(..., "--pseudonymiser", envvar="TRE_PSEUDONYMISER_URL",
                          help="the pseudonymisation service's base URL")
IdentifierOpt = typer.Option(..., "--identifier", help="the person's identifier as "
                             "SYSTEM|VALUE, e.g. 'urn:oid:1.2.250.1.213.1.4.8|<INS>'")
TokenOpt = typer.Option(None, "--token", envvar="TRE_TOKEN",
                        help="bearer token of a steward (else `tre login`'s)")
CaOpt = typer.Option(None, "--ca", help="CA certificate the portal's and the service's TLS "
                     "certificates chain to [default: the system's CAs]")
InsecureOpt = typer.Option(False, "--insecure", help="Development only: plain http URLs")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output on stdout.")


class _Steward:
    """The steward's two calls: identifier → pseudonym, then the portal's consent API."""

    def __init__(self, portal: str, service: str, token: str | None, ca: Path | None,
                 insecure: bool) -> None:
        check_portal_url(portal, "--portal", allow_http=insecure)
        check_portal_url(service, "--pseudonymiser", allow_http=insecure)
        token = bearer_token(token)
        verify: str | bool = str(ca) if ca else True
        self.pseudonyms = PseudonymClient(service, lambda: token, verify=verify)
        self.portal = PortalCalls(portal, token, verify=verify)

    def pseudonym(self, identifier: Identifier) -> str:
        return self.pseudonymise([identifier])[0]

    def pseudonymise(self, identifiers: list[Identifier]) -> list[str]:
        try:
            return self.pseudonyms.pseudonyms(identifiers)
        except PseudonymisationError as exc:
            fail(str(exc))

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.portal.json(method, path, **kwargs)


def _identifier(text: str) -> Identifier:
    try:
        return Identifier.parse(text)
    except IdentifierError as exc:
        fail(f"--identifier: {exc}")


@app.command("record")
def record(
    identifier: str = IdentifierOpt,
    purpose: list[Purpose] = typer.Option(..., "--purpose", help="consented purpose "
                                          "(repeatable)"),
    valid_to: str | None = typer.Option(None, "--valid-to", help="last day, YYYY-MM-DD"),
    portal: str = PortalOpt, pseudonymiser: str = ServiceOpt, token: str | None = TokenOpt,
    ca: Path | None = CaOpt, insecure: bool = InsecureOpt, as_json: bool = JsonOpt,
) -> None:
    """Record a person's consent: the portal receives their pseudonym, never the identifier."""
    person = _identifier(identifier)
    steward = _Steward(portal, pseudonymiser, token, ca, insecure)
    body: dict[str, Any] = {"subject": steward.pseudonym(person),
                            "purposes": [str(p) for p in purpose]}
    if valid_to:
        body["valid_to"] = valid_to
    consent = steward.call("POST", "/v1/consents", json=body)
    if as_json:
        print_json(consent)
    else:
        console.print(f"consent {consent['id']} recorded for {consent['subject']} "
                      f"({', '.join(consent['purposes'])}); the person's receipt: "
                      f"{portal.rstrip('/')}/v1/consents/{consent['id']}/receipt?format=html",
                      highlight=False, soft_wrap=True)


@app.command("withdraw")
def withdraw(
    identifier: str = IdentifierOpt,
    reason: str | None = typer.Option(None, "--reason", help="recorded with the withdrawal"),
    portal: str = PortalOpt, pseudonymiser: str = ServiceOpt, token: str | None = TokenOpt,
    ca: Path | None = CaOpt, insecure: bool = InsecureOpt, as_json: bool = JsonOpt,
) -> None:
    """Withdraw every active consent of a person; each node honours it before its next read."""
    person = _identifier(identifier)
    steward = _Steward(portal, pseudonymiser, token, ca, insecure)
    subject = steward.pseudonym(person)
    active = steward.call("GET", "/v1/consents",
                          params={"subject": subject, "status": "active", "limit": 1000})
    withdrawn = [steward.call("POST", f"/v1/consents/{c['id']}/withdraw",
                              json={"reason": reason} if reason else None)
                 for c in active["items"]]
    if as_json:
        print_json({"subject": subject, "withdrawn": withdrawn})
    elif not withdrawn:
        fail(f"no active consent of this person ({subject}) in the registry you can see")
    else:
        console.print(f"withdrew {len(withdrawn)} consent(s) of {subject}: "
                      + ", ".join(c["id"] for c in withdrawn), highlight=False, soft_wrap=True)


@app.command("import")
def import_fhir(
    bundle: Path = typer.Argument(..., help="FHIR R4 Consent or Bundle (JSON) whose "
                                  "patient.identifier carries a person identifier"),
    portal: str = PortalOpt, pseudonymiser: str = ServiceOpt, token: str | None = TokenOpt,
    ca: Path | None = CaOpt, insecure: bool = InsecureOpt, as_json: bool = JsonOpt,
) -> None:
    """Import FHIR consents by identifier: each patient.identifier is replaced by the
    federation pseudonym here, before the bundle is sent (all or none)."""
    try:
        payload = json.loads(bundle.read_text())
    except (OSError, ValueError) as exc:
        fail(f"{bundle} is not a readable JSON file: {exc}")
    located = _patient_identifiers(payload)
    people = []
    for where, ident in located:
        try:
            people.append(Identifier(str(ident.get("system") or ""),
                                     str(ident.get("value") or "")))
        except IdentifierError as exc:
            fail(f"{where}.patient.identifier: {exc}")
    steward = _Steward(portal, pseudonymiser, token, ca, insecure)
    for (_, ident), subject in zip(located, steward.pseudonymise(people), strict=True):
        ident.clear()
        ident.update({"system": PSEUDONYM_SYSTEM, "value": subject})
    result = steward.call("POST", "/v1/consents/fhir", json=payload,
                          headers={"Content-Type": "application/fhir+json"})
    if as_json:
        print_json(result)
    else:
        console.print(f"imported {len(people)} consent(s): {result['created']} created, "
                      f"{result['updated']} updated, {result['withdrawn']} withdrawn, "
                      f"{result['unchanged']} unchanged", highlight=False)


def _patient_identifiers(payload: Any) -> list[tuple[str, dict[str, Any]]]:
    """(where, the mutable patient.identifier) of each Consent carrying a person identifier;
    consents already given by pseudonym are left as they are."""
    if not isinstance(payload, dict):
        fail("the file is not a FHIR resource (a JSON object)")
    if payload.get("resourceType") == "Bundle":
        resources = [(f"entry[{i}].resource", e.get("resource"))
                     for i, e in enumerate(payload.get("entry") or []) if isinstance(e, dict)]
    else:
        resources = [("Consent", payload)]
    found = []
    for where, resource in resources:
        if not isinstance(resource, dict) or resource.get("resourceType") != "Consent":
            fail(f"{where} is not a FHIR Consent")
        ident = (resource.get("patient") or {}).get("identifier")
        if isinstance(ident, dict) and ident.get("system") != PSEUDONYM_SYSTEM:
            found.append((where, ident))
    return found
