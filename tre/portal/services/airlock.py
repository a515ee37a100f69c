"""The airlock: nothing a run produced leaves until it is checked (Five Safes "safe outputs").

Outputs enter `pending` with automated checks computed once, at entry, and shown
to checkers. Release needs two distinct output checkers, neither the permit
holder: pending → approved_once → released, or rejected by either. A failed
automated check blocks approval (the checker rejects, giving the reason). Only
the permit holder downloads, only once released, and every download is audited.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import json
import math
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from access_control.tokens import Principal
from tre.core.audit import AuditAction
from tre.core.disclosure import dp_advantage_bound
from tre.portal.context import Portal, utcnow
from tre.portal.errors import Conflict, Forbidden, Invalid, NotFound
from tre.portal.services import model_card
from tre.portal.store import access as access_store
from tre.portal.store import airlock as store

FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")
MODEL_SUFFIXES = (".pt", ".pth", ".npz", ".safetensors")
# What the run report's own format (federation/apps/server.py) and the model card's
# (services/model_card.py) say some numbers are.
# Every other number is classified by its structure, so a count under a name nobody
# foresaw is still read as a count (fail closed).
DECLARED = (
    ("parameter", ("params.*", "permit.*", "rounds.#.nodes.#.steps", "node_selection.*",
                   "secagg.*",  # SecAgg+ num_shares, reconstruction_threshold
                   "privacy.nodes.#.steps")),
    ("identifier", ("run_id", "*node_id")),
    ("time", ("started_at", "finished_at", "*seconds")),
    ("privacy", ("*epsilon*", "*delta", "*noise_multiplier", "releases.#.released",
                 "releases.#.charged", "privacy_audits.#.mia_*")),
    # a perfect AUC or accuracy (1.0: common on a small, easy table) is not a count of 1
    ("statistic", ("rounds.#.evaluate.auc", "rounds.#.evaluate.accuracy",
                   "rounds.#.evaluate.loss", "decision_threshold.threshold",
                   "decision_threshold.accuracy", "decision_threshold.balanced_accuracy",
                   # the card's metrics and their intervals (its test_examples stay counts)
                   "metrics.auc.*", "metrics.accuracy.*", "metrics.accuracy_calibrated.*",
                   "metrics.loss.*")),
)
PSEUDONYM = re.compile(r"ps_[0-9a-f]{32}")
MAX_VECTOR = 64  # longest list of numbers an aggregate metric may hold (curves, per-round)


def _check(name: str, passed: bool, detail: str) -> dict[str, Any]:
    return {"check": name, "passed": passed, "detail": detail}


def _walk(value: Any, path: str):
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")


def check_dp_attestations(claims: dict[str, Any], attestations: list[dict[str, Any]]
                          ) -> dict[str, Any]:
    caps = {(d["node_id"], d["dataset_id"]): d for d in claims["datasets"]}
    if not attestations:
        return _check("dp_attestation", False, "no node attested its privacy spend")
    problems = []
    for a in attestations:
        cap = caps.get((a.get("node_id"), a.get("dataset_id")))
        where = f"{a.get('node_id')}/{a.get('dataset_id')}"
        if cap is None:
            problems.append(f"{where} is not in the permit")
        elif a.get("epsilon") is None or a.get("delta") is None:
            problems.append(f"{where} gave no (ε, δ)")
        elif a["epsilon"] > cap["epsilon_cap"] + 1e-9 or a["delta"] > cap["delta_cap"]:
            problems.append(f"{where} spent ε={a['epsilon']:.3g}, δ={a['delta']:.2g} above the "
                            f"cap ε={cap['epsilon_cap']}, δ={cap['delta_cap']}")
    if problems:
        return _check("dp_attestation", False, "; ".join(problems))
    worst = max(a["epsilon"] for a in attestations)
    return _check("dp_attestation", True,
                  f"{len(attestations)} node(s) attested; highest ε {worst:.3g} within caps")


def _json_files(files: dict[str, bytes]) -> dict[str, Any]:
    out = {}
    for name, data in files.items():
        if name.endswith(".json"):
            try:
                out[name] = json.loads(data)
            except ValueError:
                out[name] = None
    return out


def _csv_rows(files: dict[str, bytes]) -> dict[str, list[dict[str, str]]]:
    return {name: list(csv.DictReader(io.StringIO(data.decode("utf-8", "replace"))))
            for name, data in files.items() if name.endswith(".csv")}


def check_aggregates_only(files: dict[str, bytes]) -> dict[str, Any]:
    problems = []
    for name, doc in _json_files(files).items():
        if doc is None:
            problems.append(f"{name} is not valid JSON")
            continue
        for path, value in _walk(doc, name):
            if isinstance(value, list) and len(value) > MAX_VECTOR and all(
                isinstance(v, int | float) for v in value
            ):
                problems.append(f"{path} holds {len(value)} numbers (looks per-record)")
            if isinstance(value, str) and PSEUDONYM.search(value):
                problems.append(f"{path} holds a subject pseudonym")
    for name, rows in _csv_rows(files).items():
        columns = {c.lower() for c in (rows[0].keys() if rows else [])}
        if columns & {"pseudonym", "patient_id", "subject", "study_id"}:
            problems.append(f"{name} has a per-subject identifier column")
    for name, data in files.items():
        if not name.endswith((".json", ".csv", ".png", ".svg", ".md", ".txt") + MODEL_SUFFIXES):
            problems.append(f"{name}: unknown file type")
        elif not name.endswith(MODEL_SUFFIXES + (".png",)) and PSEUDONYM.search(
            data.decode("utf-8", "replace")
        ):
            problems.append(f"{name} mentions a subject pseudonym")
    problems = sorted(set(problems))
    if problems:
        return _check("aggregates_only", False, "; ".join(problems[:10]))
    return _check("aggregates_only", True, "only model weights and aggregate values")


def _numbers(value: Any, path: str) -> Iterator[tuple[str, float]]:
    """Every number of a JSON document with its path (list positions as `#`), booleans
    and numbers written as text included: nothing escapes by its type."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v, f"{path}.#")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield path, float(value)
    elif isinstance(value, str):
        number = _as_number(value)
        if number is not None:
            yield path, number


def _as_number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _ordinals(value: Any, path: str) -> set[str]:
    """Paths of list fields that number their elements 1..n (or 0..n-1) in order, such
    as the round of each round: positions, not counts."""
    found: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            found |= _ordinals(v, f"{path}.{k}")
    elif isinstance(value, list):
        rows = [v for v in value if isinstance(v, dict)]
        if rows and len(rows) == len(value):
            for key in set.intersection(*(set(r) for r in rows)):
                seq = [r[key] for r in rows]
                if all(isinstance(x, int) and not isinstance(x, bool) for x in seq) and \
                        seq in (list(range(1, len(seq) + 1)), list(range(len(seq)))):
                    found.add(f"{path}.#.{key}")
        for v in value:
            found |= _ordinals(v, f"{path}.#")
    return found


def classify(name: str, doc: Any) -> list[tuple[str, float, str]]:
    """Each number of an output with its class: `count` (integral), `statistic` (not),
    or what the run report's format declares it to be (`DECLARED`), or `ordinal`."""
    ordinals = _ordinals(doc, name)
    out = []
    for path, number in _numbers(doc, name):
        inner = path[len(name) + 1:]
        kind = next((k for k, patterns in DECLARED
                     if any(fnmatch.fnmatchcase(inner, p) for p in patterns)), None)
        if kind is None:
            kind = "ordinal" if path in ordinals else (
                "count" if number.is_integer() else "statistic")
        out.append((path, number, kind))
    return out


def _csv_numbers(name: str, rows: list[dict[str, str]]) -> list[tuple[str, float, str]]:
    """A table's numeric columns: all-integral columns hold counts, others statistics."""
    out = []
    for col in rows[0].keys() if rows else []:
        values = [_as_number(r.get(col) or "") for r in rows]
        if not values or any(v is None for v in values):
            continue
        integral = all(v.is_integer() for v in values)
        ordinal = integral and values == [float(i) for i in range(1, len(values) + 1)]
        kind = "ordinal" if ordinal else "count" if integral else "statistic"
        out += [(f"{name} row {i + 1} {col}", v, kind) for i, v in enumerate(values)]
    return out


def check_small_counts(files: dict[str, bytes], k: int) -> dict[str, Any]:
    """Reads every number of every JSON and CSV output, classified by structure; a count
    above 0 and below k anywhere blocks release. Model files hold model parameters."""
    numbers = [n for name, doc in _json_files(files).items() for n in classify(name, doc)]
    numbers += [n for name, rows in _csv_rows(files).items() for n in _csv_numbers(name, rows)]
    small = [f"{path} = {value:g}" for path, value, kind in numbers
             if kind == "count" and 0 < value < k]
    tally = Counter(kind for _, _, kind in numbers)
    models = sum(name.endswith(MODEL_SUFFIXES) for name in files)
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(tally.items()))
    summary += f"; {models} model file(s) of parameters" if models else ""
    if small:
        return _check("small_counts", False, f"counts below {k}: " + "; ".join(small[:10])
                      + f" (read {summary})")
    return _check("small_counts", True, f"every count is 0 or at least {k} (read {summary})")


def check_membership_inference(attestations: list[dict[str, Any]], max_advantage: float
                               ) -> dict[str, Any]:
    """A node's model is held back when the lower end of its attack advantage's 95 %
    interval is above the limit: leakage that sampling noise cannot explain. An advantage
    that noise could explain does not block, so the decision does not flip between runs
    of the same story. Each finding shows the figures beside what the node's ε allows."""
    missing = [a.get("node_id") for a in attestations if a.get("mia_advantage") is None]
    if missing or not attestations:
        who = ", ".join(map(str, missing)) or "any node"
        return _check("membership_inference", False, f"no membership-inference audit from {who}")
    findings, ok = [], True
    for a in attestations:
        finding, node_ok = _membership_finding(a, max_advantage)
        ok = ok and node_ok
        findings.append(finding)
    return _check("membership_inference", ok,
                  f"attack advantage per node (blocked when its 95 % interval lies above "
                  f"{max_advantage}): " + "; ".join(findings) + ". The (ε, δ) bound on any "
                  "attacker is loose at these ε; the empirical audit is the informative figure")


def _membership_finding(a: dict[str, Any], max_advantage: float) -> tuple[str, bool]:
    adv = float(a["mia_advantage"])
    if math.isnan(adv):
        return f"{a['node_id']} has too few records for an audit", False
    low, high = float(a.get("mia_ci_low", adv)), float(a.get("mia_ci_high", adv))
    node_ok = low <= max_advantage
    text = f"{a['node_id']} {adv:.3f} (95 % CI {low:.3f}–{high:.3f}"
    if a.get("mia_chance_advantage") is not None:
        text += f", chance alone {float(a['mia_chance_advantage']):.3f}"
    if a.get("mia_p_value") is not None:
        text += f", p = {float(a['mia_p_value']):.3f}"
    if a.get("epsilon") is not None:
        bound = dp_advantage_bound(float(a["epsilon"]), float(a.get("delta") or 0.0))
        text += f", ε = {float(a['epsilon']):.2f} allows up to {bound:.3f}"
    return text + ")" + ("" if node_ok else " TOO HIGH"), node_ok


def automated_checks(portal: Portal, claims: dict[str, Any], files: dict[str, bytes],
                     attestations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    s = portal.settings
    return [
        check_dp_attestations(claims, attestations),
        check_aggregates_only(files),
        check_small_counts(files, s.suppression_k),
        check_membership_inference(attestations, s.airlock_mia_max_advantage),
    ]


def _output_dir(portal: Portal, oid: str) -> Path:
    return portal.settings.state_dir / "outputs" / oid


def submit_output(portal: Portal, *, run_id: str, permit: dict[str, Any], files: dict[str, bytes],
                  attestations: list[dict[str, Any]], actor: str = "system") -> dict[str, Any]:
    """Called by the runs service when a run ends: files go in, state `pending`. A run's
    report gets its model card beside it, checked and released with the rest."""
    if not files:
        raise Invalid("an output needs at least one file")
    for name in files:
        if not FILE_NAME.match(name):
            raise Invalid(f"output file name {name!r} is not allowed")
    if model_card.CARD in files:
        raise Invalid(f"{model_card.CARD} is written by the portal, not by a run")
    with portal.db.reader() as cur:
        request = access_store.get_request(cur, permit["request_id"]) or {}
    card = model_card.card_file(files, permit, request, run_id=run_id,
                                k=portal.settings.suppression_k)
    if card is not None:
        files = {**files, model_card.CARD: card}
    oid = f"out_{uuid.uuid4().hex[:16]}"
    checks = automated_checks(portal, permit["claims"], files, attestations)
    folder = _output_dir(portal, oid)
    folder.mkdir(parents=True)
    try:
        listing = []
        for name, data in files.items():
            (folder / name).write_bytes(data)
            listing.append({"name": name, "bytes": len(data),
                            "sha256": hashlib.sha256(data).hexdigest()})
        with portal.db.transaction() as cur:
            store.insert_output(cur, {
                "id": oid, "run_id": run_id, "permit_id": permit["id"],
                "holder_sub": permit["holder_sub"], "files": listing,
                "attestations": attestations, "checks": checks, "created_at": utcnow(),
            })
            portal.audit.append(cur, actor=actor, action=AuditAction.OUTPUT_SUBMIT,
                                object_type="output",
                                object_id=oid, details={
                                    "run_id": run_id, "permit_id": permit["id"],
                                    "files": {f["name"]: f["sha256"] for f in listing},
                                    "failed_checks": [c["check"] for c in checks
                                                      if not c["passed"]]})
            return _with_reviews(cur, store.get_output(cur, oid))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _with_reviews(cur, row: dict[str, Any]) -> dict[str, Any]:
    row["reviews"] = store.reviews_for(cur, row["id"])
    return row


def _load(cur, oid: str) -> dict[str, Any]:
    row = store.get_output(cur, oid)
    if row is None:
        raise NotFound(f"output {oid} does not exist")
    return row


def _visible(principal: Principal, row: dict[str, Any], *, checker: bool) -> bool:
    return checker or row["holder_sub"] == principal.subject


def list_outputs(portal: Portal, principal: Principal, *, checker: bool) -> list[dict[str, Any]]:
    with portal.db.reader() as cur:
        rows = store.list_outputs(cur, None if checker else principal.subject)
        return [_with_reviews(cur, r) for r in rows]


def get_output(portal: Portal, principal: Principal, oid: str, *, checker: bool
               ) -> dict[str, Any]:
    with portal.db.reader() as cur:
        row = _load(cur, oid)
        if not _visible(principal, row, checker=checker):
            raise NotFound(f"output {oid} does not exist")
        return _with_reviews(cur, row)


def card_of(portal: Portal, out: dict[str, Any]) -> dict[str, Any] | None:
    """The model card of an output already read through `get_output` (None: it has none,
    having no run report)."""
    entry = next((f for f in out["files"] if f["name"] == model_card.CARD), None)
    if entry is None:
        return None
    data = (_output_dir(portal, out["id"]) / model_card.CARD).read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise Conflict(f"the model card of {out['id']} changed after it was stored")
    return json.loads(data)


def get_card(portal: Portal, principal: Principal, oid: str, *, checker: bool
             ) -> dict[str, Any]:
    """An output's model card, for whoever may see the output (checkers, its holder)."""
    card = card_of(portal, get_output(portal, principal, oid, checker=checker))
    if card is None:
        raise NotFound(f"output {oid} has no model card (it holds no run report)")
    return card


def review_output(portal: Portal, principal: Principal, oid: str, decision: str, rationale: str
                  ) -> dict[str, Any]:
    now = utcnow()
    with portal.db.transaction() as cur:
        row = _load(cur, oid)
        if row["holder_sub"] == principal.subject:
            raise Forbidden("the permit holder cannot check their own output")
        if row["status"] not in ("pending", "approved_once"):
            raise Conflict(f"output {oid} is {row['status']}: it is not awaiting a check")
        if any(r["checker_sub"] == principal.subject for r in store.reviews_for(cur, oid)):
            raise Conflict("you have already checked this output; a second checker must decide")
        failed = [c for c in row["checks"] if not c["passed"]]
        if decision == "approve" and failed:
            raise Conflict("automated checks failed (" + "; ".join(
                f"{c['check']}: {c['detail']}" for c in failed) + "): reject it with a reason")
        store.insert_review(cur, oid, principal.subject, principal.username, decision,
                            rationale, now)
        if decision == "reject":
            status = "rejected"
        else:
            status = "approved_once" if row["status"] == "pending" else "released"
        store.set_status(cur, oid, status, now, decided=status in ("released", "rejected"))
        portal.audit.append(cur, actor=principal.username, action=AuditAction(f"output.{decision}"),
                            object_type="output", object_id=oid,
                            details={"status": status, "rationale": rationale})
        return _with_reviews(cur, _load(cur, oid))


def download(portal: Portal, principal: Principal, oid: str, name: str) -> tuple[bytes, str]:
    """The file's bytes for the permit holder of a released output (hash re-checked)."""
    with portal.db.transaction() as cur:
        row = _load(cur, oid)
        if row["holder_sub"] != principal.subject:
            raise Forbidden("only the permit holder downloads a released output")
        if row["status"] != "released":
            raise Conflict(f"output {oid} is {row['status']}: only released outputs leave")
        entry = next((f for f in row["files"] if f["name"] == name), None)
        if entry is None:
            raise NotFound(f"output {oid} has no file {name!r}")
        data = (_output_dir(portal, oid) / name).read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise Conflict(f"{name} changed after it was checked: download refused")
        portal.audit.append(cur, actor=principal.username, action=AuditAction.OUTPUT_DOWNLOAD,
                            object_type="output", object_id=oid,
                            details={"file": name, "sha256": entry["sha256"]})
        return data, name
