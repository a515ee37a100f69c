"""Synthetic releases: nodes upload gated synthetic tables, researchers download them.

Only synthetic data that passed the node's privacy gate may leave a node (DESIGN
§2.1). The node already refuses to send anything else; the portal checks again
(defence in depth): the uploaded report must show a passed gate whose every check
passed, the core checks (exact copies, distance to closest record, membership
inference) must be present with figures that really meet their thresholds, and the
table must hold exactly the columns the report says were modelled, so an
identifier the node excluded cannot ride along. Downloads are audited.

A steward (a data subject withdrew consent) or the publishing node (its consented
cohort changed) can withdraw a release: the row stays as the record, its table and
plots are deleted, downloads answer 410 Gone naming the withdrawal, the same table
cannot be uploaded again (409), and the next new synthesis is served as usual.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

from access_control.policy import Role
from access_control.tokens import Principal
from tre.core.audit import AuditAction
from tre.portal.context import Portal, utcnow
from tre.portal.errors import Conflict, Forbidden, Gone, Invalid, NotFound
from tre.portal.store import catalogue as catalogue_store
from tre.portal.store import synthetic as store

FORMATS = ("csv", "parquet")
MEDIA_TYPES = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}
#: Checks the portal insists on, whatever else the node's gate ran.
REQUIRED_CHECKS = ("exact_copies", "dcr_median_ratio", "dcr_p5_ratio", "mia_advantage")
PLOT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,150}\.png$")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PLOTS = 500


def _folder(portal: Portal, release_id: str) -> Path:
    return portal.settings.state_dir / "synthetic" / release_id


def _holds(value: Any, comparison: str, threshold: Any) -> bool:
    numbers = all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                  for x in (value, threshold))
    if not numbers:
        return False
    return value <= threshold if comparison == "<=" else (
        value >= threshold if comparison == ">=" else False)


def check_gate(gate: Any) -> list[dict[str, Any]]:
    """The gate's checks if the verdict is a pass the portal can confirm; else Invalid (422)."""
    if not isinstance(gate, dict):
        raise Invalid("report.json carries no gate verdict: only gated synthetic data is "
                      "accepted")
    checks = gate.get("checks")
    if not isinstance(checks, list) or not checks or not all(isinstance(c, dict)
                                                               for c in checks):
        raise Invalid("report.json lists no gate checks: only gated synthetic data is accepted")
    failed = [str(c.get("name")) for c in checks if c.get("passed") is not True]
    if gate.get("passed") is not True or failed:
        raise Invalid("the release gate did not pass (failed: "
                      f"{', '.join(failed) or 'overall verdict'}): the portal accepts only "
                      "synthetic data that passed every check")
    by_name = {c.get("name"): c for c in checks}
    missing = [n for n in REQUIRED_CHECKS if n not in by_name]
    if missing:
        raise Invalid(f"the gate verdict lacks the check(s) {', '.join(missing)}")
    for name in REQUIRED_CHECKS:
        c = by_name[name]
        if not _holds(c.get("value"), c.get("comparison"), c.get("threshold")):
            raise Invalid(f"gate check {name} is marked passed but its figure {c.get('value')!r}"
                          f" is not {c.get('comparison')} {c.get('threshold')!r}")
    return checks


def _parse_report(report: bytes) -> dict[str, Any]:
    try:
        value = json.loads(report)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Invalid(f"report.json is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise Invalid("report.json must be a JSON object")
    return value


def _modelled_columns(report: dict[str, Any]) -> list[str]:
    plan = report.get("columns")
    columns = plan.get("columns") if isinstance(plan, dict) else None
    if not isinstance(columns, list) or not columns:
        raise Invalid("report.json has no column plan (columns.columns)")
    return [str(c.get("name")) for c in columns if isinstance(c, dict)]


def _read_table(table: bytes) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(io.BytesIO(table))
    except Exception as exc:  # noqa: BLE001 - arrow raises several kinds for bad input
        raise Invalid(f"the table is not a readable Parquet file: {exc}") from exc


def _check_plots(plots: dict[str, bytes]) -> None:
    if len(plots) > MAX_PLOTS:
        raise Invalid(f"{len(plots)} plots: at most {MAX_PLOTS} are accepted")
    for name, data in plots.items():
        if not PLOT_NAME_RE.match(name):
            raise Invalid(f"plot name {name!r} is invalid: letters, digits, '.', '_', '-' "
                          "ending in .png")
        if not data.startswith(PNG_SIGNATURE):
            raise Invalid(f"plot {name} is not a PNG image")


def upload(portal: Portal, principal: Principal, hospital_id: str, dataset_id: str, *,
           table: bytes, report: bytes, plots: dict[str, bytes]) -> dict[str, Any]:
    """Store a node's gated synthetic release of one of its catalogued datasets."""
    if principal.hospital_id != hospital_id:
        raise Forbidden(f"this node's service account belongs to {principal.hospital_id!r}: "
                        f"it cannot publish synthetic data for {hospital_id!r}")
    with portal.db.reader() as cur:
        if catalogue_store.get_dataset(cur, hospital_id, dataset_id) is None:
            raise NotFound(f"dataset {hospital_id}/{dataset_id} is not in the catalogue: "
                           "publish its descriptor first")
        withdrawn = store.withdrawn_with_table(cur, hospital_id, dataset_id,
                                               hashlib.sha256(table).hexdigest())
    if withdrawn is not None:
        raise Conflict(f"this table is that of synthetic release {withdrawn['id']}, withdrawn "
                       f"on {withdrawn['withdrawn_at']:%Y-%m-%d} by "
                       f"{withdrawn['withdrawn_by']}: synthesise again before publishing")
    parsed = _parse_report(report)
    checks = check_gate(parsed.get("gate"))
    modelled = _modelled_columns(parsed)
    arrow = _read_table(table)
    if arrow.num_rows < 1:
        raise Invalid("the synthetic table has no rows")
    if sorted(arrow.column_names) != sorted(modelled):
        extra = sorted(set(arrow.column_names) - set(modelled))
        lacking = sorted(set(modelled) - set(arrow.column_names))
        raise Invalid("the table's columns differ from the modelled columns of its report"
                      + (f"; not modelled: {', '.join(extra)}" if extra else "")
                      + (f"; missing: {', '.join(lacking)}" if lacking else ""))
    _check_plots(plots)
    csv = arrow.to_pandas().to_csv(index=False).encode()

    release_id = f"syn_{secrets.token_hex(8)}"
    blobs = {"synthetic.parquet": table, "synthetic.csv": csv, "report.json": report,
             **{f"plots/{name}": data for name, data in plots.items()}}
    folder = _folder(portal, release_id)
    folder.mkdir(parents=True)
    try:
        files = []
        for name, data in blobs.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
            files.append({"name": name, "sha256": hashlib.sha256(data).hexdigest(),
                          "size": len(data)})
        now = utcnow()
        row = {"id": release_id, "hospital_id": hospital_id, "dataset_id": dataset_id,
               "uploaded_by": principal.username, "created_at": now, "rows": arrow.num_rows,
               "columns": list(arrow.column_names), "files": files, "gate": parsed["gate"],
               "report": parsed}
        with portal.db.transaction() as cur:
            store.insert_release(cur, row)
            portal.audit.append(
                cur, actor=principal.username, action=AuditAction.SYNTHETIC_PUBLISH,
                object_type="dataset", object_id=f"{hospital_id}/{dataset_id}",
                details={"release_id": release_id, "rows": arrow.num_rows,
                         "columns": list(arrow.column_names),
                         "checks": {c.get("name"): c.get("value") for c in checks},
                         "files": {f["name"]: f["sha256"] for f in files}})
            return _summary(store.latest_release(cur, hospital_id, dataset_id))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _plots(release: dict[str, Any]) -> list[str]:
    return [f["name"].removeprefix("plots/") for f in release["files"]
            if f["name"].startswith("plots/")]


def _withdrawal(release: dict[str, Any]) -> dict[str, Any] | None:
    if release.get("withdrawn_at") is None:
        return None
    return {"at": release["withdrawn_at"], "by": release["withdrawn_by"],
            "reason": release["withdrawal_reason"]}


def _summary(release: dict[str, Any]) -> dict[str, Any]:
    """What the API and the web page show about a release (no rows); a withdrawn one
    says so and offers neither downloads nor plots."""
    h, d = release["hospital_id"], release["dataset_id"]
    gate = release["gate"]
    withdrawal = _withdrawal(release)
    return {
        "release_id": release["id"],
        "hospital_id": h,
        "dataset_id": d,
        "status": "withdrawn" if withdrawal else "published",
        "withdrawal": withdrawal,
        "published_at": release["created_at"],
        "uploaded_by": release["uploaded_by"],
        "rows": release["rows"],
        "columns": release["columns"],
        "gate": {"passed": gate.get("passed"), "summary": gate.get("summary"),
                 "checks": gate.get("checks")},
        "plots": [] if withdrawal else _plots(release),
        "downloads": {} if withdrawal else {
            fmt: f"/v1/catalogue/{d}/synthetic?hospital_id={h}&format={fmt}"
            for fmt in FORMATS},
        "report_url": f"/v1/catalogue/datasets/{h}/{d}/synthetic/report",
    }


def catalogue_summaries(portal: Portal) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest release's summary of every dataset that has one (the catalogue lists)."""
    with portal.db.reader() as cur:
        return {key: _summary(r) for key, r in store.latest_releases(cur).items()}


def _latest(cur: Any, hospital_id: str, dataset_id: str) -> dict[str, Any]:
    release = store.latest_release(cur, hospital_id, dataset_id)
    if release is None:
        raise NotFound(f"dataset {hospital_id}/{dataset_id} has no synthetic version")
    return release


def latest_summary(portal: Portal, hospital_id: str, dataset_id: str) -> dict[str, Any] | None:
    """The newest release's summary for the web page, or None when there is none."""
    with portal.db.reader() as cur:
        release = store.latest_release(cur, hospital_id, dataset_id)
    return _summary(release) if release else None


def report(portal: Portal, hospital_id: str, dataset_id: str) -> dict[str, Any]:
    """The newest release's summary with its full fidelity and privacy reports."""
    with portal.db.reader() as cur:
        release = _latest(cur, hospital_id, dataset_id)
    return {**_summary(release), "report": release["report"]}


def _refuse_withdrawn(release: dict[str, Any]) -> None:
    """410 Gone naming who withdrew the release, when and why."""
    withdrawal = _withdrawal(release)
    if withdrawal:
        raise Gone(f"synthetic release {release['id']} of {release['hospital_id']}/"
                   f"{release['dataset_id']} was withdrawn on {withdrawal['at']:%Y-%m-%d} "
                   f"by {withdrawal['by']}: {withdrawal['reason']}")


def _read_checked(portal: Portal, release: dict[str, Any], name: str) -> bytes:
    _refuse_withdrawn(release)
    entry = next((f for f in release["files"] if f["name"] == name), None)
    if entry is None:
        raise NotFound(f"synthetic release {release['id']} has no file {name!r}")
    data = (_folder(portal, release["id"]) / name).read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise Conflict(f"{name} of synthetic release {release['id']} changed on disk: "
                       "withheld until the node publishes again")
    return data


def plot(portal: Portal, hospital_id: str, dataset_id: str, name: str) -> bytes:
    """One PNG plot of the newest release (drawn at the node with no bin under 10 people)."""
    with portal.db.reader() as cur:
        release = _latest(cur, hospital_id, dataset_id)
    return _read_checked(portal, release, f"plots/{name}")


def _offering(cur: Any, dataset_id: str) -> str:
    """The one hospital whose newest release of `dataset_id` is served, or, when none is,
    the one whose release was withdrawn (so the 410 names the withdrawal)."""
    newest = store.newest_status_by_hospital(cur, dataset_id)
    if not newest:
        raise NotFound(f"no hospital offers a synthetic version of {dataset_id}")
    served = [h for h, withdrawn in newest.items() if not withdrawn]
    if len(served) > 1:
        raise Invalid(f"several hospitals offer a synthetic {dataset_id} "
                      f"({', '.join(served)}): add ?hospital_id=")
    if not served and len(newest) > 1:
        raise Gone(f"every synthetic version of {dataset_id} was withdrawn "
                   f"({', '.join(newest)})")
    return served[0] if served else next(iter(newest))


def download(portal: Portal, principal: Principal, dataset_id: str, hospital_id: str | None,
             fmt: str) -> tuple[bytes, str, str]:
    """(bytes, file name, media type) of the newest synthetic table; the download is audited
    in the same transaction that reads the release, so no unlogged copy leaves."""
    if fmt not in FORMATS:
        raise Invalid(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    with portal.db.transaction() as cur:
        if hospital_id is None:
            hospital_id = _offering(cur, dataset_id)
        release = _latest(cur, hospital_id, dataset_id)
        name = f"synthetic.{fmt}"
        data = _read_checked(portal, release, name)
        portal.audit.append(
            cur, actor=principal.username, action=AuditAction.SYNTHETIC_DOWNLOAD,
            object_type="dataset",
            object_id=f"{hospital_id}/{dataset_id}",
            details={"release_id": release["id"], "format": fmt, "rows": release["rows"],
                     "sha256": hashlib.sha256(data).hexdigest(), "subject": principal.subject})
    return data, f"{hospital_id}_{dataset_id}_synthetic.{fmt}", MEDIA_TYPES[fmt]


def withdraw(portal: Portal, principal: Principal, release_id: str,
             reason: str) -> dict[str, Any]:
    """Withdraw a release: recorded and audited in one transaction, then its table and
    plots deleted (report.json stays: it holds no rows). A node may withdraw only its
    own hospital's releases; a steward any, since consent is withdrawn through them."""
    with portal.db.transaction() as cur:
        release = store.get_release(cur, release_id)
        if release is None:
            raise NotFound(f"synthetic release {release_id} does not exist")
        steward = principal.has_any(frozenset({Role.STEWARD.value}))
        if not steward and principal.hospital_id != release["hospital_id"]:
            raise Forbidden(f"this node's service account belongs to "
                            f"{principal.hospital_id!r}: it cannot withdraw a release of "
                            f"{release['hospital_id']!r}")
        if release["withdrawn_at"] is not None:
            raise Conflict(f"synthetic release {release_id} was already withdrawn on "
                           f"{release['withdrawn_at']:%Y-%m-%d} by {release['withdrawn_by']}")
        store.set_withdrawn(cur, release_id, at=utcnow(), by=principal.username, reason=reason)
        portal.audit.append(
            cur, actor=principal.username, action=AuditAction.SYNTHETIC_WITHDRAW,
            object_type="dataset",
            object_id=f"{release['hospital_id']}/{release['dataset_id']}",
            details={"release_id": release_id, "reason": reason,
                     "files": {f["name"]: f["sha256"] for f in release["files"]}})
        withdrawn = store.get_release(cur, release_id)
    folder = _folder(portal, release_id)
    for entry in release["files"]:
        if entry["name"] != "report.json":
            (folder / entry["name"]).unlink(missing_ok=True)
    shutil.rmtree(folder / "plots", ignore_errors=True)
    return _summary(withdrawn)
