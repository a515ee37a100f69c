"""FHIR R4 `Consent` import and export for the consent registry (DESIGN §5).

fhir.resources 8 defaults to R5; its `R4B` package has the R4-compatible Consent
(R4B did not change Consent), so that is what validates here. Mapping:

| registry                 | FHIR R4 Consent                                             |
|--------------------------|-------------------------------------------------------------|
| id                       | `id` and `identifier[system=urn:tre:consent]`               |
| subject pseudonym        | `patient.identifier` (system `urn:tre:pseudonym`)           |
| organisation             | `organization[0].identifier` (system `urn:tre:organisation`)|
| purposes                 | `provision.purpose` (system `urn:tre:consent-purpose`)      |
| valid_from / valid_to    | `provision.period.start` / `.end`                           |
| active                   | `status=active`, `provision.type=permit`                    |
| withdrawn                | `status=inactive`, `provision.type=deny`                    |

On import `status=active` with `provision.type=deny` (an objection) and
`status=inactive|rejected` also mean withdrawn; HL7 v3 PurposeOfUse codes HRESCH,
PUBHLTH and HQUALIMP are understood. Every problem is reported with its FHIR path
(`Bundle.entry[2].resource.provision.purpose[0]`); one bad entry rejects the lot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.consent import Consent
from pydantic import ValidationError

from tre.core.schemas import PSEUDONYM_SYSTEM, PURPOSE_SYSTEM, ConsentStatus, Purpose
from tre.portal.consent_schemas import PURPOSE_LABELS

CONSENT_ID_SYSTEM = "urn:tre:consent"
ORGANISATION_SYSTEM = "urn:tre:organisation"
V3_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
V3_PURPOSES = {
    "HRESCH": Purpose.SCIENTIFIC_RESEARCH,
    "PUBHLTH": Purpose.PUBLIC_INTEREST_HEALTH,
    "HQUALIMP": Purpose.IMPROVEMENT_OF_CARE,
}
DGA_POLICY = "https://eur-lex.europa.eu/eli/reg/2022/868/oj"
CONSENT_ID = re.compile(r"^cns-[0-9a-f]{16}$")
IDENTIFIER = re.compile(r"^[A-Za-z0-9._:-]+$")
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class FhirError(Exception):
    """The payload is not an acceptable FHIR Consent or Bundle; `problems` name the paths."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        shown = "; ".join(str(p) for p in problems[:20])
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        super().__init__(f"invalid FHIR consent: {shown}{more}")


@dataclass(frozen=True)
class ParsedConsent:
    path: str
    consent_id: str | None
    subject: str
    organisation: str | None
    purposes: list[Purpose]
    status: ConsentStatus
    valid_from: date | None
    valid_to: date | None


# -- export ---------------------------------------------------------------------------------
def to_fhir(row: dict[str, Any]) -> dict[str, Any]:
    """A registry row (current state or one version) as an R4 Consent resource (JSON)."""
    withdrawn = row["status"] == ConsentStatus.WITHDRAWN
    period = {k: v.isoformat() for k, v in (("start", row.get("valid_from")),
                                            ("end", row.get("valid_to"))) if v is not None}
    provision: dict[str, Any] = {
        "type": "deny" if withdrawn else "permit",
        "purpose": [{"system": PURPOSE_SYSTEM, "code": str(p),
                     "display": PURPOSE_LABELS[Purpose(p)]} for p in row["purposes"]],
    }
    if period:
        provision["period"] = period
    updated = row.get("updated_at") or row.get("recorded_at")
    resource: dict[str, Any] = {
        "resourceType": "Consent",
        "id": row["consent_id"],
        "meta": {"versionId": str(row["version"])},
        "identifier": [{"system": CONSENT_ID_SYSTEM, "value": row["consent_id"]}],
        "status": "inactive" if withdrawn else "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "research", "display": "Research"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "57016-8",
                                  "display": "Privacy policy acknowledgment Document"}]}],
        "patient": {"identifier": {"system": PSEUDONYM_SYSTEM, "value": row["subject"]}},
        "organization": [{"identifier": {"system": ORGANISATION_SYSTEM,
                                         "value": row["organisation"]},
                          "display": row["organisation"]}],
        "policy": [{"authority": "https://eur-lex.europa.eu", "uri": DGA_POLICY}],
        "provision": provision,
    }
    if isinstance(updated, datetime):
        resource["meta"]["lastUpdated"] = updated.isoformat()
        resource["dateTime"] = updated.isoformat()
    return resource


def to_bundle(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "total": len(rows),
        "entry": [{"fullUrl": f"urn:tre:consent:{r['consent_id']}", "resource": to_fhir(r)}
                  for r in rows],
    }


# -- import ---------------------------------------------------------------------------------
def parse(payload: Any) -> list[ParsedConsent]:
    """Validate a Consent or a Bundle of Consents; all entries, or `FhirError` naming paths."""
    if not isinstance(payload, dict) or "resourceType" not in payload:
        raise FhirError([Problem("(root)", "expected a FHIR resource: a JSON object with "
                                 "resourceType Consent or Bundle")])
    kind = payload["resourceType"]
    if kind == "Consent":
        resource = _validate(Consent, payload, "Consent")
        return [_consent(resource, "Consent")]
    if kind != "Bundle":
        raise FhirError([Problem("resourceType", f"expected Consent or Bundle, not {kind!r}")])
    entries = payload.get("entry")
    if isinstance(entries, list) and len(entries) > MAX_ENTRIES:
        raise FhirError([Problem("Bundle.entry", f"{len(entries)} entries: import at most "
                                 f"{MAX_ENTRIES} per bundle")])
    bundle = _validate(Bundle, payload, "Bundle")
    problems: list[Problem] = []
    parsed: list[ParsedConsent] = []
    for i, entry in enumerate(bundle.entry or []):
        path = f"Bundle.entry[{i}].resource"
        resource = entry.resource
        if resource is None:
            problems.append(Problem(path, "missing: every entry must hold a Consent"))
            continue
        if resource.get_resource_type() != "Consent":
            problems.append(Problem(f"{path}.resourceType",
                                    f"expected Consent, not {resource.get_resource_type()!r}"))
            continue
        try:
            parsed.append(_consent(resource, path))
        except FhirError as exc:
            problems.extend(exc.problems)
    if not parsed and not problems:
        problems.append(Problem("Bundle.entry", "the bundle holds no Consent"))
    if problems:
        raise FhirError(problems)
    return parsed


def _validate(model: type, payload: dict[str, Any], root: str) -> Any:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise FhirError([Problem(_fhir_path(root, e["loc"]), e["msg"])
                         for e in exc.errors()]) from None
    except (ValueError, TypeError) as exc:  # fhir.resources raises some errors unwrapped
        raise FhirError([Problem(root, str(exc))]) from None


def _fhir_path(root: str, loc: tuple[Any, ...]) -> str:
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and re.fullmatch(r"[A-Za-z_]+", part):
            name = {"resource_type": "resourceType", "class_fhir": "class"}.get(part, part)
            if name.endswith("__ext"):
                name = "_" + name[: -len("__ext")]
            path += f".{name}"
    return path


def _as_date(value: Any) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _consent(c: Consent, path: str) -> ParsedConsent:
    problems: list[Problem] = []

    def bad(where: str, message: str) -> None:
        problems.append(Problem(f"{path}.{where}" if where else path, message))

    status = None
    if c.status is None:
        bad("status", "required: active, inactive or rejected")
    elif c.status in ("inactive", "rejected"):
        status = ConsentStatus.WITHDRAWN
    elif c.status != "active":
        bad("status", f"{c.status!r} cannot be registered: only active, inactive or rejected "
                      "consents are registry entries")

    subject = None
    if c.patient is None:
        bad("patient", "required: the subject's pseudonym as patient.identifier")
    elif c.patient.identifier is not None:
        ident = c.patient.identifier
        if ident.system not in (None, PSEUDONYM_SYSTEM):
            bad("patient.identifier.system", f"expected {PSEUDONYM_SYSTEM}: the registry holds "
                "pseudonyms only, never person identifiers; `tre consent import` turns "
                "identifiers into pseudonyms on the steward's machine first")
        subject = ident.value
        if not subject:
            bad("patient.identifier.value", "required: the subject's pseudonym")
    elif c.patient.reference and c.patient.reference.startswith("Patient/"):
        subject = c.patient.reference.removeprefix("Patient/")
    else:
        bad("patient", "give the pseudonym as patient.identifier (system "
                       f"{PSEUDONYM_SYSTEM}) or patient.reference Patient/<pseudonym>")
    if subject is not None and not (8 <= len(subject) <= 128 and IDENTIFIER.match(subject)):
        bad("patient.identifier.value", "a pseudonym is 8-128 letters, digits, '.', '_', ':' "
                                        "or '-'")

    organisation = None
    for j, org in enumerate(c.organization or []):
        name = org.identifier.value if org.identifier is not None else None
        if name is None and org.reference and org.reference.startswith("Organization/"):
            name = org.reference.removeprefix("Organization/")
        if name is None:
            bad(f"organization[{j}]", "give the organisation as identifier.value")
        elif not (len(name) <= 100 and IDENTIFIER.match(name)):
            bad(f"organization[{j}].identifier.value", f"{name!r} is not an organisation id")
        elif organisation is not None and name != organisation:
            bad(f"organization[{j}]", "one organisation per consent")
        else:
            organisation = name

    purposes: list[Purpose] = []
    valid_from = valid_to = None
    p = c.provision
    if p is None:
        bad("provision", "required: provision.type, provision.purpose and optionally "
                         "provision.period")
    else:
        if p.type not in ("permit", "deny"):
            bad("provision.type", f"must be permit or deny, not {p.type!r}")
        elif p.type == "deny":
            status = ConsentStatus.WITHDRAWN
        elif status is None and c.status == "active":
            status = ConsentStatus.ACTIVE
        if p.provision:
            bad("provision.provision", "nested provisions are not supported: give one "
                                       "top-level provision per consent")
        if p.data:
            bad("provision.data", "consent limited to particular resources is not supported")
        if not p.purpose:
            bad("provision.purpose", "required: at least one purpose coding")
        for j, coding in enumerate(p.purpose or []):
            purpose = _purpose(coding.system, coding.code)
            if purpose is None:
                known = ", ".join(x.value for x in Purpose)
                bad(f"provision.purpose[{j}]", f"unknown purpose {coding.code!r} of system "
                    f"{coding.system!r}: use {PURPOSE_SYSTEM} with one of {known}")
            elif purpose not in purposes:
                purposes.append(purpose)
        if p.period is not None:
            try:
                valid_from, valid_to = _as_date(p.period.start), _as_date(p.period.end)
            except ValueError as exc:
                bad("provision.period", str(exc))
            if valid_from and valid_to and valid_from > valid_to:
                bad("provision.period", f"start {valid_from} is after end {valid_to}")

    if problems:
        raise FhirError(problems)
    return ParsedConsent(
        path=path,
        consent_id=c.id if c.id and CONSENT_ID.match(c.id) else None,
        subject=subject,
        organisation=organisation,
        purposes=purposes,
        status=status or ConsentStatus.ACTIVE,
        valid_from=valid_from,
        valid_to=valid_to,
    )


def _purpose(system: str | None, code: str | None) -> Purpose | None:
    if code is None:
        return None
    if system in (None, PURPOSE_SYSTEM):
        try:
            return Purpose(code)
        except ValueError:
            return None
    if system == V3_ACT_REASON:
        return V3_PURPOSES.get(code)
    return None
