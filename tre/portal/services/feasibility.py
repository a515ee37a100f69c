"""Feasibility counts from the portal: a Flower query run to the hospitals that hold data.

The researcher never reaches the SuperLink or a node. The portal picks the
hospitals that published a matching dataset in the catalogue, maps them to their
enrolled SuperNodes (`services.nodes`), signs a short-lived feasibility ticket for
that cohort, purpose and those hospitals (nodes answer nothing without it), runs the
feasibility app (`federation.apps.feasibility`) with that `node-map`, waits for its answers and
returns them per hospital. Every cell is passed through the disclosure rule again
(idempotent on disclosed values; the portal's k applies if it is the stricter), and
the only totals are `disclosure.combine` of shown cells, which never reveal a
suppressed cell. The request and its outcome are audited here; each node audits
the query it answered.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from access_control.tokens import Principal
from federation import launch
from federation.launch.fab import FEASIBILITY_FAB_DIR
from federation.launch.params import FeasibilityParams
from federation.launch.report import REPORT
from tre.core import disclosure
from tre.core.audit import AuditAction
from tre.core.schemas import FeasibilityTicket
from tre.portal.context import Portal
from tre.portal.errors import Conflict, Unavailable
from tre.portal.schemas import FeasibilityIn
from tre.portal.services import nodes, results
from tre.portal.store import catalogue as catalogue_store


def _targets(portal: Portal, body: FeasibilityIn) -> list[str]:
    with portal.db.reader() as cur:
        rows = catalogue_store.list_datasets(cur)
    wanted = body.cohort.dataset_id
    hospitals = sorted({r["hospital_id"] for r in rows
                        if wanted is None or r["dataset_id"] == wanted})
    if body.hospitals is not None:
        hospitals = [h for h in hospitals if h in set(body.hospitals)]
    return hospitals


def _cells(entry: dict[str, Any], k: int) -> dict[str, Any]:
    out = dict(entry)
    for key in ("subjects", "studies"):
        if key in out:
            out[key] = disclosure.redisclose(out[key], k=k)
    if "by_label" in out:
        out["by_label"] = {lab: disclosure.redisclose(v, k=k) for lab, v in out["by_label"].items()}
    return out


def _wait(handle: launch.RunHandle, timeout_s: float) -> dict[str, Any]:
    path = handle.results_dir / REPORT
    deadline = time.monotonic() + timeout_s
    last_check = time.monotonic()
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        if time.monotonic() - last_check > 10:
            last_check = time.monotonic()
            status = launch.run_status(handle)
            if status and status.startswith("finished") and not path.exists():
                time.sleep(1)
                if not path.exists():
                    raise Unavailable(f"feasibility run {handle.run_id} ended as {status!r} "
                                      "without answers")
        time.sleep(0.3)
    launch.stop_run(handle)
    raise Unavailable(f"feasibility run {handle.run_id} gave no answers within {timeout_s:.0f}s")


def run_feasibility(portal: Portal, principal: Principal, body: FeasibilityIn) -> dict[str, Any]:
    s = portal.settings
    k = s.suppression_k
    hospitals = _targets(portal, body)
    if not hospitals:
        raise Conflict("no hospital published a dataset matching this cohort"
                       + (f" (dataset {body.cohort.dataset_id!r})" if body.cohort.dataset_id
                          else ""))
    mapping, not_enrolled = nodes.node_map(portal, hospitals)
    query_id = f"fq_{uuid.uuid4().hex[:16]}"
    digest = body.cohort.digest()
    portal.audit.record(actor=principal.username, action=AuditAction.FEASIBILITY_RUN,
                        object_type="feasibility", object_id=query_id,
                        details={"cohort": body.cohort.model_dump(mode="json"),
                                 "cohort_digest": digest, "purpose": body.purpose.value,
                                 "hospitals": hospitals, "node_map": mapping})
    answers: list[dict[str, Any]] = []
    flower_run_id = None
    if mapping:
        now = int(time.time())
        ticket = portal.keys.sign_ticket(FeasibilityTicket(
            iss=s.permit_issuer, ticket_id=query_id, sub=principal.subject,
            purpose=body.purpose, cohort_digest=digest, hospitals=sorted(mapping),
            iat=now, nbf=now, exp=now + int(s.feasibility_timeout_s) + 120))
        config = FeasibilityParams(
            cohort=body.cohort.model_dump_json(), purpose=body.purpose.value, ticket=ticket,
            node_map=json.dumps(mapping), timeout=int(s.feasibility_timeout_s)).to_run_config()
        with portal.db.transaction() as cur:
            credential = results.issue(portal, cur, results.FEASIBILITY, query_id,
                                       results.lifetime(s.feasibility_timeout_s + 120))
        try:
            handle = launch.submit_app(s.superlink, FEASIBILITY_FAB_DIR, config,
                                       results.folder(portal, results.FEASIBILITY, query_id),
                                       credential=credential, insecure=s.superlink_insecure,
                                       root_certificates=s.superlink_root_certificates)
        except launch.RunError as exc:
            raise Unavailable(str(exc)) from exc
        flower_run_id = handle.run_id
        results.bind(portal, results.FEASIBILITY, query_id, flower_run_id)
        answers = _wait(handle, s.feasibility_timeout_s + 60)["answers"]
    by_hospital: dict[str, dict[str, Any]] = {}
    for a in answers:
        row = {"hospital_id": a["hospital_id"], "status": a["status"]}
        if a["status"] == "answered":
            row["datasets"] = [_cells(d, k) for d in a["result"]["datasets"]
                               if body.cohort.dataset_id in (None, d["dataset_id"])]
            row["k"] = max(int(a["result"].get("k", k)), k)
        else:
            row["reason"] = a.get("reason")
        by_hospital[a["hospital_id"]] = row
    for h in not_enrolled:
        by_hospital[h] = {"hospital_id": h, "status": "not-enrolled",
                          "reason": "no SuperNode is enrolled for this hospital"}
    rows = [by_hospital[h] for h in hospitals if h in by_hospital]
    per_dataset: dict[str, list[disclosure.Disclosed]] = {}
    for row in rows:
        for d in row.get("datasets", []):
            per_dataset.setdefault(d["dataset_id"], []).append(d["subjects"])
    totals = {ds: disclosure.combine(values, k=k) for ds, values in sorted(per_dataset.items())}
    portal.audit.record(actor="system", action=AuditAction.FEASIBILITY_RESULT,
                        object_type="feasibility",
                        object_id=query_id,
                        details={"flower_run_id": flower_run_id,
                                 "status": {r["hospital_id"]: r["status"] for r in rows}})
    return {"id": query_id, "flower_run_id": flower_run_id, "cohort": body.cohort.model_dump(
        mode="json"), "purpose": body.purpose.value, "k": k, "hospitals": rows,
        "total_subjects": totals,
        "note": "cells below k are shown as '<k'; a total with a hidden cell is '>=S'"}
