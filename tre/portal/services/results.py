"""Results of the runs the portal submitted, received over its API from their ServerApp.

The portal and the SuperLink share no folder. When the portal submits a run (a
training run or a feasibility query) it issues a credential for that run alone,
keeps its digest, and seals the credential to the SuperLink's report key
(`access_control.run_credentials`); the ServerApp sends progress, the report and
the model back with it. What arrives lands in the portal's own state folder for that
run (`federation.launch.report.RunFolder`), where the run's follower reads it. A
credential is good for one run, while that run is active, for one report, and
only from the Flower run that first used it (the one the portal submitted).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from access_control import run_credentials
from federation.launch.report import MODEL, PLOT, RunFolder, plot_report
from tre.core.audit import AuditAction
from tre.portal.context import Portal, utcnow
from tre.portal.errors import Conflict, Forbidden, Unauthenticated, Unavailable
from tre.portal.store import runs as store

RUN = "run"
FEASIBILITY = "feasibility"
_FOLDERS = {RUN: "runs", FEASIBILITY: "feasibility"}
ACTIVE_RUN = ("queued", "running")


def folder(portal: Portal, kind: str, object_id: str) -> Path:
    """Where the results of one run or feasibility query live in the portal's state."""
    return portal.settings.state_dir / _FOLDERS[kind] / object_id


def issue(portal: Portal, cur: Any, kind: str, object_id: str, expires_at: datetime) -> str:
    """A new credential for this run, sealed to the SuperLink's report key (what goes in
    the run config). Called inside the transaction that records the run."""
    key = portal.settings.superlink_report_key
    if not key:
        raise Unavailable("the portal has no report key of its SuperLink "
                          "(TRE_SUPERLINK_REPORT_KEY, printed by `tre federation superlink`): "
                          "runs could not send their results back")
    credential, digest = run_credentials.issue()
    try:
        sealed = run_credentials.seal(credential, key)
    except run_credentials.CredentialError as exc:
        raise Unavailable(str(exc)) from exc
    store.insert_credential(cur, digest, kind, object_id, utcnow(), expires_at)
    return sealed


def bind(portal: Portal, kind: str, object_id: str, flower_run_id: int) -> None:
    """Tie the credential to the Flower run the SuperLink gave the submission. Results
    sent first by any other Flower run (a copy of the sealed credential resubmitted by
    someone who reached the Control API) have already bound it: the run then fails."""
    with portal.db.transaction() as cur:
        row = store.get_credential_of(cur, kind, object_id)
        if row is None:
            raise Conflict(f"{kind} {object_id} has no results credential")
        if row["flower_run_id"] is None:
            store.bind_credential(cur, row["digest"], flower_run_id)
        elif row["flower_run_id"] != flower_run_id:
            raise Conflict(f"the results credential of {kind} {object_id} was used by Flower "
                           f"run {row['flower_run_id']}, not by the run the portal submitted "
                           f"({flower_run_id})")


def _holder(cur: Any, credential: str, flower_run_id: int) -> dict[str, Any]:
    """The run this credential reports for, if it may still report, bound to the Flower
    run that uses it first."""
    row = store.get_credential(cur, run_credentials.digest(credential))
    if row is None:
        raise Unauthenticated("not a run credential this portal issued")
    if row["expires_at"] <= utcnow():
        raise Unauthenticated(f"the credential of {row['kind']} {row['object_id']} expired")
    if row["flower_run_id"] is None:
        store.bind_credential(cur, row["digest"], flower_run_id)
    elif row["flower_run_id"] != flower_run_id:
        raise Forbidden(f"this credential reports for Flower run {row['flower_run_id']}, "
                        f"not {flower_run_id}")
    if row["kind"] == RUN:
        run = store.get_run(cur, row["object_id"])
        if run is None or run["state"] not in ACTIVE_RUN:
            raise Conflict(f"run {row['object_id']} is no longer active: it takes no results")
    return row


def add_event(portal: Portal, credential: str, flower_run_id: int,
              event: dict[str, Any]) -> None:
    with portal.db.transaction() as cur:
        row = _holder(cur, credential, flower_run_id)
    RunFolder(folder(portal, row["kind"], row["object_id"])).append_event(event)


def put_model(portal: Portal, credential: str, flower_run_id: int, data: bytes) -> None:
    with portal.db.transaction() as cur:
        row = _holder(cur, credential, flower_run_id)
    if row["kind"] != RUN or row["report_at"] is not None:
        raise Conflict("a model is taken once per training run, before its report")
    RunFolder(folder(portal, row["kind"], row["object_id"])).write(MODEL, data)


def put_report(portal: Portal, credential: str, flower_run_id: int,
               report: dict[str, Any]) -> None:
    """The run's final report: taken once, drawn as a plot for a training run, audited."""
    with portal.db.transaction() as cur:
        row = _holder(cur, credential, flower_run_id)
        if row["report_at"] is not None:
            raise Conflict(f"{row['kind']} {row['object_id']} already reported")
        out = RunFolder(folder(portal, row["kind"], row["object_id"]))
        if row["kind"] == RUN:
            if (out.path / MODEL).exists():
                report = {**report, "model_file": MODEL}
            if report.get("rounds"):
                out.path.mkdir(parents=True, exist_ok=True)
                plot_report(report, out.path / PLOT)
                report = {**report, "plot_file": PLOT}
        out.write_report(report)
        store.mark_reported(cur, row["digest"], utcnow())
        portal.audit.append(cur, actor="superlink", action=AuditAction.RUN_RESULTS,
                            object_type=row["kind"], object_id=row["object_id"],
                            details={"status": report.get("status"),
                                     "flower_run_id": flower_run_id})


def lifetime(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)
