"""The consent registry of data-altruism organisations (DESIGN §5 Consent, DGA Art. 20).

A steward acts only for the organisation named in its token; a change never
overwrites: it appends a version and takes the next registry version, which
nodes pull as snapshots or deltas. Each change and its audit entry commit in one
transaction (DESIGN §9); a bulk or FHIR import is all-or-nothing.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError

from access_control.policy import Action, is_allowed
from access_control.tokens import Principal
from tre.core.audit import canonical_json
from tre.core.schemas import ConsentStatus, Purpose
from tre.portal import consent_fhir
from tre.portal.consent_schemas import (
    PURPOSE_LABELS,
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
from tre.portal.store import access as access_store
from tre.portal.store import consent as store

IDS_IN_RESULT = 1000
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


# -- who may touch which organisation ----------------------------------------------------------
def _own_organisation(principal: Principal) -> str:
    if not principal.organisation:
        raise Forbidden("your token carries no organisation claim: a steward acts for one "
                        "organisation")
    return principal.organisation


def _check_writable(principal: Principal, organisation: str) -> None:
    own = _own_organisation(principal)
    if organisation != own:
        raise Forbidden(f"you act for organisation {own}; consents of {organisation} are not "
                        "yours to change")


def _sees_all(principal: Principal) -> bool:
    """Who may read the whole audit trail (which holds every change) may read every
    organisation's registry; a steward reads only its own."""
    return is_allowed(principal, Action.AUDIT_READ)


def _read_scope(principal: Principal, organisation: str | None) -> str | None:
    """The organisation a read is limited to (None: all, for auditors)."""
    if _sees_all(principal):
        return organisation
    own = _own_organisation(principal)
    if organisation not in (None, own):
        raise Forbidden(f"you act for organisation {own}, not {organisation}")
    return own


def _check_readable(principal: Principal, row: dict[str, Any] | None, cid: str) -> dict[str, Any]:
    if row is None or not (_sees_all(principal) or row["organisation"] == principal.organisation):
        raise NotFound(f"consent {cid} does not exist")
    return row


def _report_organisation(principal: Principal, organisation: str | None) -> str:
    if _sees_all(principal):
        if organisation is None:
            raise Invalid("name the organisation: ?organisation=...")
        return organisation
    own = _own_organisation(principal)
    if organisation not in (None, own):
        raise Forbidden(f"you act for organisation {own}, not {organisation}")
    return own


# -- models -----------------------------------------------------------------------------------
def _version_model(row: dict[str, Any]) -> ConsentVersion:
    return ConsentVersion(**{k: row[k] for k in ConsentVersion.model_fields})


def _to_model(cur, row: dict[str, Any], *, with_history: bool) -> Consent:
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
def _apply_one(portal: Portal, cur, principal: Principal, row: dict[str, Any], *,
               reason: str | None = None) -> dict[str, Any]:
    """Write one version and its audit entry (in the caller's transaction)."""
    result = store.apply_batch(cur, store.incoming_table([row]), now=utcnow(),
                               actor=principal.username, source="api", want_ids=True)
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
    entry = portal.audit.append(cur, actor=principal.username,
                                action=f"consent.{version['change']}", object_type="consent",
                                object_id=cid, details=details)
    store.set_audit_seq(cur, current["registry_version"], current["registry_version"], entry.seq)
    return current


def record_consent(portal: Portal, principal: Principal, body: ConsentIn) -> Consent:
    organisation = body.organisation or _own_organisation(principal)
    _check_writable(principal, organisation)
    with portal.db.transaction() as cur:
        existing = store.find_consent(cur, organisation, body.subject)
        if existing is not None:
            raise Conflict(f"subject {body.subject} already has consent {existing['consent_id']} "
                           f"with {organisation}: update or withdraw that one")
        row = _apply_one(portal, cur, principal, _row_of(body, organisation, note=body.note))
        return _to_model(cur, row, with_history=True)


def _load_writable(cur, principal: Principal, cid: str) -> dict[str, Any]:
    """A consent this steward may change; one it may not even read answers as a missing
    one does, so that a change does not confirm the id exists."""
    row = _check_readable(principal, store.get_consent(cur, cid), cid)
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
        row = _apply_one(portal, cur, principal, candidate)
        return _to_model(cur, row, with_history=True)


def withdraw_consent(portal: Portal, principal: Principal, cid: str, reason: str | None
                     ) -> Consent:
    with portal.db.transaction() as cur:
        row = _load_writable(cur, principal, cid)
        if row["status"] == ConsentStatus.WITHDRAWN:
            raise Conflict(f"consent {cid} is already withdrawn (version {row['version']})")
        candidate = {**{k: row[k] for k in ("consent_id", "organisation", "subject", "purposes",
                                             "valid_from", "valid_to")},
                     "status": ConsentStatus.WITHDRAWN.value, "note": reason}
        row = _apply_one(portal, cur, principal, candidate, reason=reason)
        return _to_model(cur, row, with_history=True)


# -- reads ------------------------------------------------------------------------------------
def get_consent(portal: Portal, principal: Principal, cid: str) -> Consent:
    with portal.db.reader() as cur:
        row = _check_readable(principal, store.get_consent(cur, cid), cid)
        return _to_model(cur, row, with_history=True)


def list_consents(portal: Portal, principal: Principal, *, organisation: str | None,
                  subject: str | None, status: ConsentStatus | None, limit: int, offset: int
                  ) -> dict[str, Any]:
    organisation = _read_scope(principal, organisation)
    with portal.db.reader() as cur:
        rows, total = store.list_consents(cur, organisation=organisation, subject=subject,
                                          status=status.value if status else None,
                                          limit=limit, offset=offset)
        return {
            "items": [_to_model(cur, r, with_history=False) for r in rows],
            "total": total,
            "registry_version": store.registry_version(cur),
        }


# -- bulk and FHIR imports --------------------------------------------------------------------
def _import(portal: Portal, principal: Principal, rows: list[dict[str, Any]],
            paths: list[str], *, source: str) -> ImportResult:
    """All rows or none: duplicate subjects, foreign organisations or id clashes reject all."""
    own = _own_organisation(principal)
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
            cur, actor=principal.username, action="consent.import", object_type="consent_batch",
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
    own = _own_organisation(principal)
    rows = [_row_of(c, c.organisation or own, note=c.note) for c in body.consents]
    return _import(portal, principal, rows, [f"consents[{i}]" for i in range(len(rows))],
                   source="bulk")


def import_records(portal: Portal, principal: Principal, records: list[ConsentIn]
                   ) -> ImportResult:
    """Bulk import without the per-request size cap (for the CLI and benchmarks)."""
    own = _own_organisation(principal)
    rows = [_row_of(c, c.organisation or own, note=c.note) for c in records]
    return _import(portal, principal, rows, [f"consents[{i}]" for i in range(len(rows))],
                   source="bulk")


def import_fhir(portal: Portal, principal: Principal, payload: Any) -> ImportResult:
    own = _own_organisation(principal)
    try:
        parsed = consent_fhir.parse(payload)
    except consent_fhir.FhirError as exc:
        raise Invalid(f"{exc}; nothing was imported") from None
    rows = [_row_of(p, p.organisation or own, p.consent_id) for p in parsed]
    return _import(portal, principal, rows, [p.path for p in parsed], source="fhir")


def export_fhir(portal: Portal, principal: Principal, organisation: str | None
                ) -> dict[str, Any]:
    organisation = _read_scope(principal, organisation)
    with portal.db.reader() as cur:
        return consent_fhir.to_bundle(store.all_consents(cur, organisation))


def consent_as_fhir(portal: Portal, principal: Principal, cid: str) -> dict[str, Any]:
    with portal.db.reader() as cur:
        return consent_fhir.to_fhir(_check_readable(principal, store.get_consent(cur, cid), cid))


# -- snapshots for nodes ----------------------------------------------------------------------
def snapshot(portal: Portal, principal: Principal, since: int) -> tuple[dict[str, Any], pa.Table]:
    """Current state of the consents changed after `since` (all of them when `since` is 0
    or ahead of the registry, e.g. after a restore: then `kind` is 'full')."""
    with portal.db.transaction() as cur:
        version = store.registry_version(cur)
        kind = "delta" if 0 < since <= version else "full"
        table = store.snapshot(cur, since if kind == "delta" else 0)
        meta = {"kind": kind, "since": since if kind == "delta" else 0, "version": version,
                "generated_at": utcnow(), "count": table.num_rows}
        portal.audit.append(cur, actor=principal.username, action="consent.snapshot",
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


# -- receipts ---------------------------------------------------------------------------------
def receipt(portal: Portal, principal: Principal, cid: str, version: int | None = None
            ) -> dict[str, Any]:
    """What the subject keeps: the consent as recorded, anchored in the audit chain."""
    with portal.db.reader() as cur:
        row = _check_readable(principal, store.get_consent(cur, cid), cid)
        v = store.get_version(cur, cid, version or row["version"])
        if v is None:
            raise NotFound(f"consent {cid} has no version {version}")
    audit = None
    if v["audit_seq"] is not None:
        found = portal.audit.entries(after_seq=v["audit_seq"] - 1, limit=1)
        if found:
            e = found[0]
            audit = {"seq": e.seq, "action": e.action, "ts": e.ts, "hash": e.hash}
    body = {
        "receipt_id": f"{cid}-v{v['version']}",
        "consent_id": cid,
        "version": v["version"],
        "latest_version": row["version"],
        "subject": v["subject"],
        "organisation": v["organisation"],
        "status": v["status"],
        "change": v["change"],
        "purposes": [{"code": p, "label": PURPOSE_LABELS[Purpose(p)]} for p in v["purposes"]],
        "valid_from": v["valid_from"].isoformat() if v["valid_from"] else None,
        "valid_to": v["valid_to"].isoformat() if v["valid_to"] else None,
        "recorded_at": v["recorded_at"].isoformat(),
        "recorded_by": v["recorded_by"],
        "registry_version": v["registry_version"],
        "audit": audit,
        "statement": _statement(v),
        "how_to_withdraw": (
            f"You can withdraw at any time, free of charge, through {v['organisation']}. "
            "A withdrawal reaches every hospital node before its next run or query; data "
            "already used in finished analyses cannot be taken back out of them."
        ),
        "legal_basis": "Regulation (EU) 2022/868 (Data Governance Act), Art. 25; "
                       "GDPR Art. 6(1)(a), 9(2)(a), 7(3)",
    }
    body["digest"] = hashlib.sha256(canonical_json(body).encode()).hexdigest()
    return body


def _statement(v: dict[str, Any]) -> str:
    names = "; ".join(PURPOSE_LABELS[Purpose(p)] for p in v["purposes"])
    if v["status"] == ConsentStatus.WITHDRAWN:
        return (f"The data subject has withdrawn consent (or objects) to the use of their "
                f"health data for: {names}.")
    period = ""
    if v["valid_from"] or v["valid_to"]:
        period = (f" from {v['valid_from'] or 'the date of recording'}"
                  f" until {v['valid_to'] or 'withdrawn'}")
    return (f"The data subject consents to the use of their pseudonymised health data, "
            f"without it leaving the hospitals, for: {names}{period}.")


def receipt_html(portal: Portal, principal: Principal, cid: str, version: int | None = None
                 ) -> str:
    data = receipt(portal, principal, cid, version)
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    return env.get_template("consent_receipt.html").render(r=data)


# -- DGA Art. 20 activity report --------------------------------------------------------------
RUN_ACTION_PREFIXES = ("run.", "ledger.", "output.", "training.")
TECHNIQUES = [
    "pseudonymisation with a key held only by each hospital",
    "federated learning: records never leave the hospital (DESIGN invariant 1)",
    "differentially private training (DP-SGD) within the permit's (ε, δ) caps",
    "small-cell suppression of counts",
    "output checking before release (airlock)",
]


def _epsilon_of(details: dict[str, Any], datasets: list[dict[str, Any]]
                ) -> list[dict[str, Any]]:
    """ε figures an audit entry reports: `epsilon_per_node` (the runs service), node
    attestations, or a flat `epsilon`/`epsilon_spent`. A node's dataset comes from the
    permit when the entry does not name it."""
    figures = []
    per_node = details.get("epsilon_per_node")
    if isinstance(per_node, dict):
        for node, eps in sorted(per_node.items()):
            mine = [d["dataset_id"] for d in datasets if d.get("node_id") == node]
            if isinstance(eps, int | float):
                figures.append({"node_id": node,
                                "dataset_id": mine[0] if len(mine) == 1 else None,
                                "epsilon": eps, "delta": None})
    for a in details.get("attestations") or []:
        if isinstance(a, dict) and isinstance(a.get("epsilon"), int | float):
            figures.append({"node_id": a.get("node_id"), "dataset_id": a.get("dataset_id"),
                            "epsilon": a["epsilon"], "delta": a.get("delta")})
    eps = details.get("epsilon_spent", details.get("epsilon"))
    if isinstance(eps, int | float):
        figures.append({"node_id": details.get("node_id") or details.get("hospital_id"),
                        "dataset_id": details.get("dataset_id"), "epsilon": eps,
                        "delta": details.get("delta_spent", details.get("delta"))})
    return figures


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def activity_report(portal: Portal, principal: Principal, organisation: str | None, year: int
                    ) -> dict[str, Any]:
    """Material for the organisation's annual activity report (DGA Art. 20): which permits
    could draw on its consents in `year`, for which purpose, who held them, when, and the
    privacy-preserving techniques applied with the ε spent, all from the audit trail.

    A permit counts when its purpose is covered (`Purpose.covered_by`) by an active,
    valid consent of the organisation during the permit's active time in the year. Runs
    are the audit entries whose action starts with run./ledger./output./training. and
    that name the permit, or belong to a run whose `run.start` did; ε per run and node is
    the largest figure reported for it (runs report cumulative spend) and ε spent per
    dataset is the sum over runs (basic composition).
    """
    org = _report_organisation(principal, organisation)
    start, end = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    entries = [e for e in portal.audit.entries() if _ts(e.ts) < end]
    requests: dict[str, dict[str, Any]] = {}
    issued: dict[str, Any] = {}
    ended: dict[str, tuple[datetime, str]] = {}
    runs: dict[str, list[Any]] = {}
    run_permit: dict[str, str] = {}
    for e in entries:
        if e.action == "request.create":
            requests[e.object_id] = {"applicant": e.actor, **e.details}
        elif e.action == "permit.issue":
            issued[e.object_id] = e
        elif e.action in ("permit.revoke", "permit.expire", "permit.exhaust"):
            ended.setdefault(e.object_id, (_ts(e.ts), e.action.split(".")[1]))
        elif e.action.startswith(RUN_ACTION_PREFIXES):
            # run.start names the permit; later entries of the run name only the run
            pid = e.details.get("permit_id") or run_permit.get(e.object_id)
            if e.object_type == "run" and pid:
                run_permit[e.object_id] = pid
            if pid and _ts(e.ts) >= start:
                runs.setdefault(pid, []).append(e)

    permits = []
    with portal.db.reader() as cur:
        for pid, e in issued.items():
            stored = access_store.get_permit(cur, pid)
            claims = stored["claims"] if stored else {}
            rid = e.details.get("request_id") or claims.get("request_id")
            req = requests.get(rid, {})
            fields = access_store.get_request(cur, rid) if rid else None
            purpose = claims.get("purpose") or req.get("purpose")
            if purpose is None:
                continue
            lo = max(_ts(e.ts), start)
            hi = min(_ts(e.details["expires"]) if e.details.get("expires") else end, end)
            if pid in ended:
                hi = min(hi, ended[pid][0])
            if lo >= hi:
                continue
            covering = sorted(p.value for p in Purpose(purpose).covered_by())
            subjects = store.subjects_covering(cur, org, covering, lo, hi)
            if subjects == 0:
                continue
            permits.append(_permit_entry(pid, e, claims, req, fields, purpose, covering,
                                         subjects, ended.get(pid), runs.get(pid, [])))
        state = store.state_at(cur, org, end)
        changes = store.versions_between(cur, org, start, end)
    anchor = entries[-1] if entries else None
    return {
        "organisation": org,
        "year": year,
        "period": {"from": start.isoformat(), "to": end.isoformat()},
        "generated_at": utcnow().isoformat(),
        "generated_by": principal.username,
        "legal_basis": "Regulation (EU) 2022/868 (Data Governance Act), Art. 20",
        "consents": {
            "at_end_of_period": {f"{r['status']}:{r['purpose']}": r["subjects"] for r in state},
            "changes": {r["change"]: r["n"] for r in changes},
        },
        "permits": permits,
        "purposes": sorted({p["purpose"] for p in permits}),
        "techniques": TECHNIQUES,
        "audit_anchor": {"seq": anchor.seq, "hash": anchor.hash} if anchor else None,
    }


def _permit_entry(pid: str, e: Any, claims: dict[str, Any], req: dict[str, Any],
                  fields: dict[str, Any] | None, purpose: str, covering: list[str],
                  subjects: int, ended: tuple[datetime, str] | None, run_entries: list[Any]
                  ) -> dict[str, Any]:
    run_eps: dict[tuple[str, Any, Any], float] = {}
    run_list = []
    for r in run_entries:
        figures = _epsilon_of(r.details, claims.get("datasets", []))
        run_list.append({"seq": r.seq, "ts": r.ts, "action": r.action, "actor": r.actor,
                         "run_id": r.details.get("run_id") or r.object_id, "epsilon": figures})
        for f in figures:
            key = (r.details.get("run_id") or r.object_id, f["node_id"], f["dataset_id"])
            run_eps[key] = max(run_eps.get(key, 0.0), float(f["epsilon"]))
    spent: dict[str, float] = {}
    for (_, node, dataset), eps in run_eps.items():
        label = f"{node or '?'}/{dataset or '?'}"
        spent[label] = spent.get(label, 0.0) + eps
    return {
        "permit_id": pid,
        "request_id": e.details.get("request_id"),
        "title": (fields or {}).get("title") or req.get("title"),
        "purpose": purpose,
        "covered_by_consented_purposes": covering,
        "consenting_subjects": subjects,
        "holder": (fields or {}).get("applicant_username") or req.get("applicant"),
        "holder_organisation": (fields or {}).get("organisation"),
        "issued_at": e.ts,
        "expires_at": e.details.get("expires"),
        "ended": {"at": ended[0].isoformat(), "how": ended[1]} if ended else None,
        "datasets": claims.get("datasets", []),
        "epsilon_cap": e.details.get("epsilon_cap"),
        "delta_cap": e.details.get("delta_cap"),
        "runs": run_list,
        "epsilon_spent": spent,
    }

