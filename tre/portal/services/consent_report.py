"""Material for a data-altruism organisation's annual activity report (DGA Art. 20).

Built from the portal's own tables for the year asked: the permits in force (with
their requests), the runs started under them and the ε each node reported, and the
organisation's consents. The audit trail is not replayed: the report names only its
head, so that a reader can later check the report against the chain.
"""

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
from tre.portal.store import runs as runs_store

TECHNIQUES = [
    "pseudonymisation with a key held only by each hospital",
    "federated learning: records never leave the hospital (DESIGN invariant 1)",
    "differentially private training (DP-SGD) within the permit's (ε, δ) caps",
    "small-cell suppression of counts",
    "output checking before release (airlock)",
]
ENDED = ("completed", "failed", "cancelled")


def _report_organisation(principal: Principal, organisation: str | None) -> str:
    """The one organisation a report is about: a steward's own; an auditor names it."""
    org = read_scope(principal, organisation)
    if org is None:
        raise Invalid("name the organisation: ?organisation=...")
    return org


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def activity_report(portal: Portal, principal: Principal, organisation: str | None, year: int
                    ) -> dict[str, Any]:
    """Which permits could draw on the organisation's consents in `year`, for which
    purpose, who held them, when, and the privacy-preserving techniques applied with the
    ε spent: what DGA Art. 20 asks a data-altruism organisation to report each year.

    A permit counts when its purpose is covered (`Purpose.covered_by`) by an active,
    valid consent of the organisation during the permit's time in force in the year.
    Its runs are those started under it in the year (a run spanning new year counts in
    the year it started); ε per run and node is what the node attested for the run's
    output, or else the run's last reported figure, and ε spent per dataset is the sum
    over runs (basic composition).
    """
    org = _report_organisation(principal, organisation)
    start, end = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    permits = []
    with portal.db.reader() as cur:
        candidates = []
        for permit in access_store.permits_in_period(cur, start, end, utcnow()):
            purpose = permit["claims"].get("purpose") or permit["request"].get("purpose")
            if purpose is None:
                continue
            lo, hi = max(permit["issued_at"], start), min(permit["until"], end)
            covering = sorted(p.value for p in Purpose(purpose).covered_by())
            subjects = store.subjects_covering(cur, org, covering, lo, hi)
            if subjects:
                candidates.append((permit, purpose, covering, subjects))
        runs = runs_store.runs_started_between(cur, [c[0]["id"] for c in candidates],
                                               start, end)
        for permit, purpose, covering, subjects in candidates:
            mine = [r for r in runs if r["permit_id"] == permit["id"]]
            permits.append(_permit_entry(permit, purpose, covering, subjects, mine, end))
        state = store.state_at(cur, org, end)
        changes = store.versions_between(cur, org, start, end)
        seq, head = portal.audit.head(cur)
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
        "audit_anchor": {"seq": seq, "hash": head} if seq else None,
    }


def _epsilon_of(run: dict[str, Any], datasets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ε of one run per node: the nodes' attestations on its airlock output (they name
    the dataset and δ), or, for a run that left no output, the per-node figures the run
    last reported; a node's dataset then comes from the permit when it names only one."""
    attested = [a for a in run["attestations"] or []
                if isinstance(a, dict) and isinstance(a.get("epsilon"), int | float)]
    if attested:
        return [{"node_id": a.get("node_id"), "dataset_id": a.get("dataset_id"),
                 "epsilon": a["epsilon"], "delta": a.get("delta")} for a in attested]
    figures = []
    for node, eps in sorted(run["epsilon_per_node"].items()):
        if isinstance(eps, int | float):
            mine = [d["dataset_id"] for d in datasets if d.get("node_id") == node]
            figures.append({"node_id": node, "dataset_id": mine[0] if len(mine) == 1 else None,
                            "epsilon": eps, "delta": None})
    return figures


def _permit_entry(permit: dict[str, Any], purpose: str, covering: list[str], subjects: int,
                  runs: list[dict[str, Any]], end: datetime) -> dict[str, Any]:
    claims, request = permit["claims"], permit["request"]
    datasets = claims.get("datasets", [])
    run_list, spent = [], {}
    for run in runs:
        figures = _epsilon_of(run, datasets)
        run_list.append({"run_id": run["id"], "researcher": run["holder_username"],
                         "state": run["state"], "started_at": _iso(run["created_at"]),
                         "ended_at": _iso(run["updated_at"]) if run["state"] in ENDED
                         else None,
                         "epsilon": figures})
        per_run: dict[str, float] = {}  # a node attesting twice is one spend, not two
        for f in figures:
            label = f"{f['node_id'] or '?'}/{f['dataset_id'] or '?'}"
            per_run[label] = max(per_run.get(label, 0.0), float(f["epsilon"]))
        for label, eps in per_run.items():
            spent[label] = spent.get(label, 0.0) + eps
    ended = permit["ended_at"] is not None and permit["ended_at"] < end
    return {
        "permit_id": permit["id"],
        "request_id": permit["request_id"],
        "title": request.get("title"),
        "purpose": purpose,
        "covered_by_consented_purposes": covering,
        "consenting_subjects": subjects,
        "holder": permit["applicant_username"],
        "holder_organisation": request.get("organisation"),
        "issued_at": _iso(permit["issued_at"]),
        "expires_at": _iso(permit["expires_at"]),
        "ended": {"at": _iso(permit["ended_at"]), "how": permit["ended_how"]} if ended
        else None,
        "datasets": datasets,
        "epsilon_cap": min((d["epsilon_cap"] for d in datasets), default=None),
        "delta_cap": min((d["delta_cap"] for d in datasets), default=None),
        "runs": run_list,
        "epsilon_spent": spent,
    }
