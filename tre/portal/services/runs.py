"""Federated runs started by the portal on the SuperLink (the researcher never touches it).

A run is checked against the permit (holder, status, caps), recorded `queued`,
then submitted to Flower and followed in a background thread that stores per-round
progress. When it ends, the model, report and plot enter the airlock as a pending
output with each node's DP attestation. A portal restarted mid-run reattaches to
the Flower run it had submitted, or marks the run failed: never `running` forever.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from access_control.permits import signing_kid
from access_control.policy import Action, is_allowed
from access_control.tokens import Principal
from federation import launch
from federation.launch.control import ControlAPI
from federation.launch.params import RunParams
from tre.core.audit import AuditAction
from tre.core.schemas import PermitStatus, RunTicket
from tre.portal.context import Portal, utcnow
from tre.portal.errors import Conflict, Forbidden, Invalid, NotFound
from tre.portal.schemas import RunIn
from tre.portal.services import access, airlock, catalogue, model_card, nodes, results
from tre.portal.store import access as access_store
from tre.portal.store import runs as store

ACTIVE = ("queued", "running")
OUTPUT_FILES = ("model.pt", "report.json", "report.png")


def _load(cur, run_id: str) -> dict[str, Any]:
    row = store.get_run(cur, run_id)
    if row is None:
        raise NotFound(f"run {run_id} does not exist")
    return row


def start_run(portal: Portal, principal: Principal, body: RunIn) -> dict[str, Any]:
    access.expire_due_permits(portal)
    now = utcnow()
    with portal.db.transaction() as cur:
        permit = access_store.get_permit(cur, body.permit_id)
        if permit is None:
            raise NotFound(f"permit {body.permit_id} does not exist")
        if permit["holder_sub"] != principal.subject:
            if not is_allowed(principal, Action.PERMIT_READ_ALL):  # as for a missing permit
                raise NotFound(f"permit {body.permit_id} does not exist")
            raise Forbidden("only the permit holder can start runs under it")
        if permit["status"] != PermitStatus.ACTIVE:
            raise Conflict(f"permit {permit['id']} is {permit['status']}: no run can start")
        kid = signing_kid(permit["token"])
        if kid in portal.keys.retired:
            raise Conflict(f"permit {permit['id']} was signed with the retired key {kid}: no "
                           "node accepts it; ask the reviewers for a new permit")
        caps = permit["claims"]["datasets"]
        eps_cap = min(d["epsilon_cap"] for d in caps)
        delta_cap = min(d["delta_cap"] for d in caps)
        if body.epsilon is not None and body.epsilon > eps_cap:
            raise Invalid(f"epsilon {body.epsilon} is above the permit's cap {eps_cap}")
        if body.delta is not None and body.delta > delta_cap:
            raise Invalid(f"delta {body.delta} is above the permit's cap {delta_cap}")
        hospitals = len({d["node_id"] for d in caps})
        if body.min_hospitals is not None and body.min_hospitals > hospitals:
            raise Invalid(f"min_hospitals {body.min_hospitals} is above the {hospitals} "
                          "hospitals the permit names")
        min_hospitals = body.min_hospitals or permit["claims"].get("min_hospitals", 0)
        mapping, missing = nodes.node_map(portal, sorted({d["node_id"] for d in caps}))
        if mapping and len(mapping) < (min_hospitals or hospitals):
            raise Conflict(f"only {len(mapping)} of the permit's hospitals have an enrolled "
                           f"node (missing: {', '.join(missing)}); the run needs "
                           f"{min_hospitals or hospitals}")
        # RunIn checked the researcher's fields against the run contract already
        params = body.run_params(
            permit=permit["token"], hospitals=hospitals, min_hospitals=min_hospitals,
            # only the permit's enrolled SuperNodes get messages (see services.nodes)
            node_map=json.dumps(mapping) if mapping else "",
            round_timeout=portal.settings.run_round_timeout_s)
        if params.secagg:
            params = replace(params, secagg_max_weight=catalogue.secagg_max_weight(
                portal, caps))
        run_id = f"run_{uuid.uuid4().hex[:16]}"
        folder = results.folder(portal, results.RUN, run_id)
        store.insert_run(cur, {"id": run_id, "permit_id": permit["id"],
                               "holder_sub": principal.subject,
                               "holder_username": principal.username,
                               "params": _stored(params),
                               "results_dir": str(folder), "created_at": now})
        credential = results.issue(portal, cur, results.RUN, run_id,
                                   results.lifetime(portal.settings.run_timeout_s))
        portal.audit.append(cur, actor=principal.username, action=AuditAction.RUN_START,
                            object_type="run", object_id=run_id,
                            details={"permit_id": permit["id"], "params": _stored(params)})
        row = store.get_run(cur, run_id)
    _spawn(portal, run_id, permit, params, credential=credential)
    return row


def _stored(params: RunParams) -> dict[str, Any]:
    """What the portal stores, audits and shows of a run's parameters: its run config
    (the form the report's `params` take too), less the permit token kept with the permit."""
    return {k: v for k, v in params.to_run_config().items() if k != "permit"}


def _spawn(portal: Portal, run_id: str, permit: dict[str, Any], params: RunParams,
           *, credential: str | None) -> None:
    """Follow the run in a thread: submit it first with its sealed `credential`, or
    (None) reattach to the Flower run it already is."""
    thread = threading.Thread(target=_execute, args=(portal, run_id, permit, params,
                                                     credential),
                              name=f"run-{run_id}", daemon=True)
    portal.run_threads[run_id] = thread
    thread.start()


def _set(portal: Portal, run_id: str, audit_action: AuditAction | None = None,
         **values: Any) -> None:
    with portal.db.transaction() as cur:
        store.update_run(cur, run_id, utcnow(), **values)
        if audit_action:
            portal.audit.append(cur, actor="system", action=audit_action, object_type="run",
                                object_id=run_id, details={k: v for k, v in values.items()
                                                           if k in ("state", "error",
                                                                    "epsilon_per_node")})


def _handle(portal: Portal, row: dict[str, Any]) -> launch.RunHandle:
    s = portal.settings
    return launch.RunHandle(int(row["flower_run_id"]), ControlAPI(
        s.superlink, s.superlink_insecure, s.superlink_root_certificates),
        Path(row["results_dir"]))


def _execute(portal: Portal, run_id: str, permit: dict[str, Any], params: RunParams,
             credential: str | None) -> None:
    try:
        with portal.db.reader() as cur:
            row = _load(cur, run_id)
        if credential is None:
            handle = _handle(portal, row)
        else:
            handle = launch.start_run(
                portal.settings.superlink, params, row["results_dir"], credential=credential,
                insecure=portal.settings.superlink_insecure,
                root_certificates=portal.settings.superlink_root_certificates)
            _set(portal, run_id, AuditAction.RUN_SUBMITTED, state="running",
                 flower_run_id=handle.run_id)
            results.bind(portal, results.RUN, run_id, handle.run_id)
        rounds: list[dict[str, Any]] = []

        def on_event(event: dict[str, Any]) -> None:
            if event.get("event") == "round":
                rounds.append({k: v for k, v in event.items() if k != "event"})
                eps = {n["hospital_id"]: n["epsilon"] for r in rounds for n in r["nodes"]
                       if n.get("status") == "trained" and n.get("hospital_id")}
                _set(portal, run_id, rounds=rounds, epsilon_per_node=eps)

        report = launch.follow_run(handle, on_event, timeout_s=portal.settings.run_timeout_s,
                                   stop=portal.closing)
        with portal.db.reader() as cur:
            if _load(cur, run_id)["state"] == "cancelled":
                return
        if report.get("status") != "completed":
            _set(portal, run_id, AuditAction.RUN_FAIL, state="failed",
                 error=report.get("stop_reason") or report.get("error") or report.get("status"),
                 epsilon_per_node=report.get("epsilon_per_node", {}))
            return
        output = _to_airlock(portal, run_id, permit, report, Path(row["results_dir"]))
        _set(portal, run_id, AuditAction.RUN_COMPLETE, state="completed", output_id=output["id"],
             epsilon_per_node=report.get("epsilon_per_node", {}))
    except launch.FollowStopped:
        return  # the portal is closing: the run stays running here and is reattached at start
    except Exception as exc:  # noqa: BLE001 - whatever happened, the run must not stay running
        if portal.closing.is_set():
            return  # the store closed under us; recover() settles the run at the next start
        with portal.db.reader() as cur:
            cancelled = _load(cur, run_id)["state"] == "cancelled"
        if not cancelled:
            _set(portal, run_id, AuditAction.RUN_FAIL, state="failed", error=str(exc)[:2000])


def hospital_run(cur, flower_run_id: str, hospital_id: str | None
                 ) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The run this portal submitted as Flower run `flower_run_id`, its permit and the
    permit's hospitals, if `hospital_id` is one of them; else 404 (whether the run
    exists is not confirmed to another hospital)."""
    unknown = NotFound(f"this portal submitted no Flower run {flower_run_id!r} for your "
                       "hospital")
    row = store.get_run_by_flower_id(cur, int(flower_run_id)) if flower_run_id.isdigit() \
        else None
    permit = access_store.get_permit(cur, row["permit_id"]) if row else None
    hospitals = sorted({d["node_id"] for d in permit["claims"]["datasets"]}) if permit else []
    if row is None or hospital_id not in hospitals:
        raise unknown
    return row, permit, hospitals


def run_ticket(portal: Portal, principal: Principal, flower_run_id: str) -> dict[str, str]:
    """Sign the ticket that binds a run this portal submitted to its Flower run id.

    Only a node of one of the permit's hospitals gets it, and only while the run is
    active; anything else is 404 (a Flower run the portal never submitted, e.g. one
    sent straight to the SuperLink with a copied permit, has no ticket at all)."""
    with portal.db.transaction() as cur:
        row, permit, hospitals = hospital_run(cur, flower_run_id, principal.hospital_id)
        if row["state"] not in ACTIVE:
            raise Conflict(f"run {row['id']} is {row['state']}: its ticket is no longer issued")
        now = int(time.time())
        ticket = RunTicket(
            iss=portal.settings.permit_issuer, ticket_id=f"rtk_{uuid.uuid4().hex[:16]}",
            run=f"flwr-{flower_run_id}", permit_id=permit["id"],
            app_hash=permit["claims"]["app_hash"], rounds=int(row["params"]["rounds"]),
            hospitals=hospitals, iat=now, nbf=now,
            exp=min(int(permit["claims"]["exp"]), now + int(portal.settings.run_timeout_s)))
        portal.audit.append(cur, actor=principal.username, action=AuditAction.RUN_TICKET,
                            object_type="run", object_id=row["id"],
                            details={"ticket_id": ticket.ticket_id, "flower_run_id":
                                     int(flower_run_id), "hospital": principal.hospital_id})
    return {"ticket": portal.keys.sign_run_ticket(ticket)}


def attestations(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each node's last trained round: its (ε, δ) and its own membership-inference audit."""
    latest = model_card.last_trained(report)
    audits = {a.get("hospital_id"): a for a in report.get("privacy_audits", [])}
    return [{
        "node_id": hospital, "dataset_id": n.get("dataset_id"), "epsilon": n.get("epsilon"),
        "delta": n.get("delta"), "accountant": report.get("params", {}).get("accountant"),
        "noise_multiplier": n.get("noise_multiplier"), "steps": n.get("steps"),
        "mia_advantage": None,
        **{k: v for k, v in audits.get(hospital, {}).items() if k.startswith("mia_")},
    } for hospital, n in sorted(latest.items())]


def _to_airlock(portal: Portal, run_id: str, permit: dict[str, Any], report: dict[str, Any],
                results: Path) -> dict[str, Any]:
    files = {name: (results / name).read_bytes() for name in OUTPUT_FILES
             if (results / name).exists()}
    return airlock.submit_output(portal, run_id=run_id, permit=permit, files=files,
                                 attestations=attestations(report))


def get_run(portal: Portal, principal: Principal, run_id: str) -> dict[str, Any]:
    with portal.db.reader() as cur:
        row = _load(cur, run_id)
    if row["holder_sub"] != principal.subject and not is_allowed(principal, Action.RUN_READ_ALL):
        raise NotFound(f"run {run_id} does not exist")
    return row


def list_runs(portal: Portal, principal: Principal) -> list[dict[str, Any]]:
    owner = None if is_allowed(principal, Action.RUN_READ_ALL) else principal.subject
    with portal.db.reader() as cur:
        return store.list_runs(cur, owner)


def cancel_run(portal: Portal, principal: Principal, run_id: str) -> dict[str, Any]:
    with portal.db.transaction() as cur:
        row = _load(cur, run_id)
        if row["holder_sub"] != principal.subject and not is_allowed(principal,
                                                                     Action.RUN_CANCEL_ANY):
            if not is_allowed(principal, Action.RUN_READ_ALL):  # as for a missing run
                raise NotFound(f"run {run_id} does not exist")
            raise Forbidden("only the run's researcher or an admin can cancel it")
        if row["state"] not in ACTIVE:
            raise Conflict(f"run {run_id} is {row['state']}: nothing to cancel")
        store.update_run(cur, run_id, utcnow(), state="cancelled")
        portal.audit.append(cur, actor=principal.username, action=AuditAction.RUN_CANCEL,
                            object_type="run", object_id=run_id)
    if row.get("flower_run_id") is not None:
        launch.stop_run(_handle(portal, row))
    with portal.db.reader() as cur:
        return _load(cur, run_id)


def recover(portal: Portal) -> None:
    """At startup: reattach to runs Flower knows, fail those that never reached it."""
    with portal.db.reader() as cur:
        pending = store.list_runs(cur, states=ACTIVE)
        permits = {r["id"]: access_store.get_permit(cur, r["permit_id"]) for r in pending}
    for row in pending:
        if row.get("flower_run_id") is None:
            _set(portal, row["id"], AuditAction.RUN_FAIL, state="failed",
                 error="the portal restarted before the run reached the SuperLink")
        else:
            portal.audit.record(actor="system", action=AuditAction.RUN_REATTACH, object_type="run",
                                object_id=row["id"])
            permit = permits[row["id"]]
            params = RunParams.from_run_config({**row["params"], "permit": permit["token"]})
            _spawn(portal, row["id"], permit, params, credential=None)


def hospital_activity(portal: Portal, principal: Principal, hospital_id: str) -> dict[str, Any]:
    """What ran on one hospital's data, as the portal saw it: runs and ε per dataset.

    Node operators see their own hospital only; the node's ledger stays the
    authority on its budget (`tre node budget show`)."""
    if principal.hospital_id != hospital_id and not is_allowed(principal, Action.RUN_READ_ALL):
        raise Forbidden(f"you operate {principal.hospital_id!r}, not {hospital_id!r}")
    with portal.db.reader() as cur:
        permits = {p["id"]: p for p in access_store.list_permits(cur)}
        rows = store.list_runs(cur)
    runs_here, spent = [], {}
    for run in rows:
        claims = permits[run["permit_id"]]["claims"]
        datasets = [d["dataset_id"] for d in claims["datasets"] if d["node_id"] == hospital_id]
        if not datasets:
            continue
        epsilon = run["epsilon_per_node"].get(hospital_id)
        runs_here.append({"run_id": run["id"], "permit_id": run["permit_id"],
                          "researcher": run["holder_username"], "purpose": claims["purpose"],
                          "datasets": datasets, "state": run["state"], "epsilon": epsilon,
                          "created_at": run["created_at"]})
        for dataset in datasets:
            spent[dataset] = spent.get(dataset, 0.0) + (epsilon or 0.0)
    return {"hospital_id": hospital_id, "runs": runs_here, "epsilon_spent": spent}
