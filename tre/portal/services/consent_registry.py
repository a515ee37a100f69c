"""The consent registry of data-altruism organisations (DESIGN §5 Consent, DGA Art. 20).

A steward acts only for the organisation named in its token; a change never
overwrites: it appends a version and takes the next registry version, which
nodes pull as snapshots or deltas. Each change and its audit entry commit in one
transaction (DESIGN §9); a bulk or FHIR import is all-or-nothing.

The subject's receipts are in `consent_receipts`, the DGA Art. 20 activity report
in `consent_report`; both take their access rules from here.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from access_control.policy import Action, is_allowed
from access_control.tokens import Principal
from tre.core.audit import AuditAction
from tre.core.schemas import ConsentStatus
from tre.portal import consent_fhir
from tre.portal.consent_schemas import (
    BulkImportIn,
    Consent,
    ConsentIn,
    ConsentPatch,
    ConsentVersion,
    ImportResult,
    canonical_purposes,
)
from tre.portal.context import Portal, utcnow
from tre.portal.errors import Conflict, Forbidden, Invalid, NotFound
from tre.portal.store import consent as store

IDS_IN_RESULT = 1000


# -- who may touch which organisation ----------------------------------------------------------
def own_organisation(principal: Principal) -> str:
    """The organisation a steward acts for: the token's claim, never a parameter."""
    if not principal.organisation:
        raise Forbidden("your token carries no organisation claim: a steward acts for one "
                        "organisation")
    return principal.organisation


def _check_writable(principal: Principal, organisation: str) -> None:
    own = own_organisation(principal)
    if organisation != own:
        raise Forbidden(f"you act for organisation {own}; consents of {organisation} are not "
                        "yours to change")


def sees_all(principal: Principal) -> bool:
    """Who may read the whole audit trail (which holds every change) may read every
    organisation's registry; a steward reads only its own."""
    return is_allowed(principal, Action.AUDIT_READ)


def read_scope(principal: Principal, organisation: str | None) -> str | None:
    """The organisation a read is limited to (None: all, for auditors)."""
    if sees_all(principal):
        return organisation
    own = own_organisation(principal)
    if organisation not in (None, own):
        raise Forbidden(f"you act for organisation {own}, not {organisation}")
    return own


def check_readable(principal: Principal, row: dict[str, Any] | None, cid: str) -> dict[str, Any]:
    """The consent row if this principal may read it; another organisation's consent
    answers as a missing one, so that its id is not confirmed."""
    if row is None or not (sees_all(principal) or row["organisation"] == principal.organisation):
        raise NotFound(f"consent {cid} does not exist")
    return row


# -- models -----------------------------------------------------------------------------------
def _version_model(row: dict[str, Any]) -> ConsentVersion:
    return ConsentVersion(**{k: row[k] for k in ConsentVersion.model_fields})


def to_model(cur, row: dict[str, Any], *, with_history: bool) -> Consent:
    hist = [_version_model(v) for v in store.history(cur, row["consent_id"])] if with_history \
        else None
    return Consent(id=row["consent_id"], history=hist,
                   **{k: row[k] for k in Consent.model_fields if k in row})


def _row_of(body: ConsentIn | consent_fhir.ParsedConsent, organisation: str,
            consent_id: str | None = None, note: str | None = None) -> dict[str, Any]:
    return {
        "consent_id": consent_id,
        "organisation": organisation,
        "subject": body.subject,
        "purposes": [p.value for p in canonical_purposes(body.purposes)],
        "status": ConsentStatus(body.status).value,
        "valid_from": body.valid_from,
        "valid_to": body.valid_to,
        "note": note,
    }


# -- single changes ---------------------------------------------------------------------------
def apply_change(portal: Portal, cur, actor: str, row: dict[str, Any], *,
                 source: str = "api", reason: str | None = None) -> dict[str, Any]:
    """Write one version and its audit entry (in the caller's transaction)."""
    result = store.apply_batch(cur, store.incoming_table([row]), now=utcnow(),
                               actor=actor, source=source, want_ids=True)
    cid = result["consent_ids"][0]
    current = store.get_consent(cur, cid)
    version = store.get_version(cur, cid, current["version"])
    details = {
        "subject": current["subject"], "organisation": current["organisation"],
        "purposes": current["purposes"], "status": current["status"],
        "valid_from": current["valid_from"], "valid_to": current["valid_to"],
        "version": current["version"], "registry_version": current["registry_version"],
    }
    if reason:
        details["reason"] = reason
    entry = portal.audit.append(cur, actor=actor,
                                action=AuditAction(f"consent.{version['change']}"),
                                object_type="consent",
                                object_id=cid, details=details)
    store.set_audit_seq(cur, current["registry_version"], current["registry_version"], entry.seq)
    return current


def record_consent(portal: Portal, principal: Principal, body: ConsentIn) -> Consent:
    organisation = body.organisation or own_organisation(principal)
    _check_writable(principal, organisation)
    with portal.db.transaction() as cur:
        existing = store.find_consent(cur, organisation, body.subject)
        if existing is not None:
            raise Conflict(f"subject {body.subject} already has consent {existing['consent_id']} "
                           f"with {organisation}: update or withdraw that one")
        row = apply_change(portal, cur, principal.username,
                           _row_of(body, organisation, note=body.note))
        return to_model(cur, row, with_history=True)


def _load_writable(cur, principal: Principal, cid: str) -> dict[str, Any]:
    """A consent this steward may change; one it may not even read answers as a missing
    one does, so that a change does not confirm the id exists."""
    row = check_readable(principal, store.get_consent(cur, cid), cid)
    _check_writable(principal, row["organisation"])
    return row


def update_consent(portal: Portal, principal: Principal, cid: str, patch: ConsentPatch
                   ) -> Consent:
    changes = patch.model_dump(exclude_unset=True)
    note = changes.pop("note", None)
    with portal.db.transaction() as cur:
        row = _load_writable(cur, principal, cid)
        merged = {k: row[k] for k in ("subject", "purposes", "status", "valid_from", "valid_to")}
        merged |= {k: v for k, v in changes.items()}
        try:
            new = ConsentIn.model_validate(merged)
        except ValidationError as exc:
            raise Invalid("; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                                    for e in exc.errors())) from None
        candidate = _row_of(new, row["organisation"], cid, note)
        if all(candidate[k] == row[k] for k in ("purposes", "status", "valid_from", "valid_to")):
            raise Invalid("the patch changes nothing: give at least one new value")
        row = apply_change(portal, cur, principal.username, candidate)
        return to_model(cur, row, with_history=True)


def withdraw_consent(portal: Portal, principal: Principal, cid: str, reason: str | None
                     ) -> Consent:
    with portal.db.transaction() as cur:
        row = _load_writable(cur, principal, cid)
        if row["status"] == ConsentStatus.WITHDRAWN:
            raise Conflict(f"consent {cid} is already withdrawn (version {row['version']})")
        candidate = {**{k: row[k] for k in ("consent_id", "organisation", "subject", "purposes",
                                             "valid_from", "valid_to")},
                     "status": ConsentStatus.WITHDRAWN.value, "note": reason}
        row = apply_change(portal, cur, principal.username, candidate, reason=reason)
        return to_model(cur, row, with_history=True)


# -- reads ------------------------------------------------------------------------------------
def get_consent(portal: Portal, principal: Principal, cid: str) -> Consent:
    with portal.db.reader() as cur:
        row = check_readable(principal, store.get_consent(cur, cid), cid)
        return to_model(cur, row, with_history=True)


def list_consents(portal: Portal, principal: Principal, *, organisation: str | None,
                  subject: str | None, status: ConsentStatus | None, limit: int, offset: int
                  ) -> dict[str, Any]:
    organisation = read_scope(principal, organisation)
    with portal.db.reader() as cur:
        rows, total = store.list_consents(cur, organisation=organisation, subject=subject,
                                          status=status.value if status else None,
                                          limit=limit, offset=offset)
        return {
            "items": [to_model(cur, r, with_history=False) for r in rows],
            "total": total,
            "registry_version": store.registry_version(cur),
        }


# -- bulk and FHIR imports --------------------------------------------------------------------
def _import(portal: Portal, principal: Principal, rows: list[dict[str, Any]],
            paths: list[str], *, source: str) -> ImportResult:
    """All rows or none: duplicate subjects, foreign organisations or id clashes reject all."""
    own = own_organisation(principal)
    seen: dict[tuple[str, str], int] = {}
    for i, row in enumerate(rows):
        if row["organisation"] != own:
            raise Forbidden(f"{paths[i]}: organisation {row['organisation']} is not yours "
                            f"(you act for {own}); nothing was imported")
        key = (row["organisation"], row["subject"])
        if key in seen:
            raise Invalid(f"{paths[i]}: subject {row['subject']} appears twice (also "
                          f"{paths[seen[key]]}); nothing was imported")
        seen[key] = i
    incoming = store.incoming_table(rows)
    batch_id = f"cbt_{uuid.uuid4().hex[:16]}"
    with portal.db.transaction() as cur:
        clashes = store.id_conflicts(cur, incoming)
        if clashes:
            raise Invalid("; ".join(f"{paths[o]}.id: {m}" for o, m in clashes[:20])
                          + "; nothing was imported")
        result = store.apply_batch(cur, incoming, now=utcnow(), actor=principal.username,
                                   source=source, want_ids=len(rows) <= IDS_IN_RESULT)
        lo, hi = result["from_version"], result["to_version"]
        changed = hi >= lo
        entry = portal.audit.append(
            cur, actor=principal.username, action=AuditAction.CONSENT_IMPORT,
            object_type="consent_batch",
            object_id=batch_id, details={
                "source": source, "organisation": own, "rows": len(rows),
                "created": result["created"], "updated": result["updated"],
                "withdrawn": result["withdrawn"], "unchanged": result["unchanged"],
                "registry_versions": [lo, hi] if changed else None,
                "digest": store.versions_digest(cur, lo, hi) if changed else None,
            })
        if changed:
            store.set_audit_seq(cur, lo, hi, entry.seq)
        return ImportResult(created=result["created"], updated=result["updated"],
                            withdrawn=result["withdrawn"], unchanged=result["unchanged"],
                            registry_version=store.registry_version(cur), audit_seq=entry.seq,
                            consent_ids=result["consent_ids"])


def bulk_import(portal: Portal, principal: Principal, body: BulkImportIn) -> ImportResult:
    own = own_organisation(principal)
    rows = [_row_of(c, c.organisation or own, note=c.note) for c in body.consents]
    return _import(portal, principal, rows, [f"consents[{i}]" for i in range(len(rows))],
                   source="bulk")


def import_records(portal: Portal, principal: Principal, records: list[ConsentIn]
                   ) -> ImportResult:
    """Bulk import without the per-request size cap (for the CLI and benchmarks)."""
    own = own_organisation(principal)
    rows = [_row_of(c, c.organisation or own, note=c.note) for c in records]
    return _import(portal, principal, rows, [f"consents[{i}]" for i in range(len(rows))],
                   source="bulk")


def import_fhir(portal: Portal, principal: Principal, payload: Any) -> ImportResult:
    own = own_organisation(principal)
    try:
        parsed = consent_fhir.parse(payload)
    except consent_fhir.FhirError as exc:
        raise Invalid(f"{exc}; nothing was imported") from None
    rows = [_row_of(p, p.organisation or own, p.consent_id) for p in parsed]
    return _import(portal, principal, rows, [p.path for p in parsed], source="fhir")


def export_fhir(portal: Portal, principal: Principal, organisation: str | None
                ) -> dict[str, Any]:
    organisation = read_scope(principal, organisation)
    with portal.db.reader() as cur:
        return consent_fhir.to_bundle(store.all_consents(cur, organisation))


def consent_as_fhir(portal: Portal, principal: Principal, cid: str) -> dict[str, Any]:
    with portal.db.reader() as cur:
        return consent_fhir.to_fhir(check_readable(principal, store.get_consent(cur, cid), cid))


# -- snapshots for nodes ----------------------------------------------------------------------
def snapshot(portal: Portal, principal: Principal, since: int) -> tuple[dict[str, Any], pa.Table]:
    """Current state of the consents changed after `since` (all of them when `since` is 0
    or ahead of the registry, e.g. after a restore: then `kind` is 'full')."""
    with portal.db.transaction() as cur:
        version = store.registry_version(cur)
        kind = "delta" if 0 < since <= version else "full"
        table = store.snapshot(cur, since if kind == "delta" else 0)
        meta = {"kind": kind, "since": since if kind == "delta" else 0, "version": version,
                "generated_at": utcnow(), "count": table.num_rows,
                "total": store.consent_count(cur)}
        portal.audit.append(cur, actor=principal.username, action=AuditAction.CONSENT_SNAPSHOT,
                            object_type="consent_snapshot", object_id=str(version),
                            details={"hospital_id": principal.hospital_id, "kind": kind,
                                     "since": since, "version": version,
                                     "consents": table.num_rows})
    return meta, table


def parquet_bytes(table: pa.Table) -> bytes:
    """A snapshot as Parquet: a million consents travel in tens of MB, not hundreds."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", compression_level=1)
    return buf.getvalue()
