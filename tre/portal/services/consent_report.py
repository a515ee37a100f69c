"""Material for a data-altruism organisation's annual activity report (DGA Art. 20)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from access_control.tokens import Principal
from tre.core.schemas import Purpose
from tre.portal.context import Portal, utcnow
from tre.portal.errors import Invalid
from tre.portal.services.consent_registry import read_scope
from tre.portal.store import access as access_store
from tre.portal.store import consent as store


def _report_organisation(principal: Principal, organisation: str | None) -> str:
    """The one organisation a report is about: a steward's own; an auditor names it."""
    org = read_scope(principal, organisation)
    if org is None:
        raise Invalid("name the organisation: ?organisation=...")
    return org


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
