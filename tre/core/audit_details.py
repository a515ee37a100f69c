"""What each audit action's `details` hold, in one place (issue 18).

`DETAILS` maps every `AuditAction` to the shape(s) of its details: a TypedDict declared
for it with `shape_of`, or several where parties write the same action from their side
(the portal *received* a catalogue entry, the node *sent* it). `AuditLog.append` checks
a member's details against them before it writes, inside the writer's transaction, so a
misspelt or missing key fails that write with `AuditDetailsError` instead of leaving a
row an auditor's query cannot find. The check is of the stored form (after the JSON
round trip the hash covers: dates as strings, tuples as lists).

The chain stays generic: `verify`, exports and plain-string actions (other parties'
logs, older rows) are never checked against these shapes.
tests/unit/test_audit_details.py also checks every literal details dict at the write
sites against them, so a mismatch fails in unit tests, before a run reaches it.
"""

import functools
import types
from collections.abc import Callable
from typing import (
    Any,
    NotRequired,
    TypedDict,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

from tre.core.audit_actions import AuditAction

A = AuditAction
Shape = TypeVar("Shape", bound=type)
#: every action's details: one shape, or the alternatives of the parties that write it
DETAILS: dict[AuditAction, tuple[type, ...]] = {}


class AuditDetailsError(ValueError):
    """An audit row's details do not have its action's shape; nothing was written."""


def shape_of(*actions: AuditAction) -> Callable[[Shape], Shape]:
    """Declare a TypedDict the details of `actions`; declared again for an action, it is
    an alternative (the same action as another party writes it)."""
    def declare(shape: Shape) -> Shape:
        for action in actions:
            DETAILS[action] = (*DETAILS.get(action, ()), shape)
        return shape
    return declare


@shape_of(A.REQUEST_SUBMIT, A.REQUEST_WITHDRAW, A.PERMIT_EXPIRE,
          A.RUN_CANCEL, A.RUN_REATTACH, A.STORE_BACKUP)
class NoDetails(TypedDict):
    """The action, actor and object say it all."""


# --- portal: access requests and permits ------------------------------------------------------
@shape_of(A.REQUEST_CREATE)
class RequestCreate(TypedDict):
    title: str
    purpose: str


@shape_of(A.REQUEST_UPDATE)
class RequestUpdate(TypedDict):
    fields: list[str]


@shape_of(A.REQUEST_REVIEW)
class RequestReview(TypedDict):
    decision: str
    round: int
    rationale: str | None


@shape_of(A.REQUEST_APPROVED, A.REQUEST_REJECTED, A.REQUEST_CHANGES_REQUESTED)
class RequestOutcome(TypedDict):
    reviewers: list[str]


@shape_of(A.PERMIT_ISSUE)
class PermitIssue(TypedDict):
    request_id: str
    epsilon_cap: float
    delta_cap: float
    expires: str
    kid: str


@shape_of(A.PERMIT_REVOKE, A.SYNTHETIC_PUBLISH_REFUSED)
class Reason(TypedDict):
    reason: str


@shape_of(A.APP_REGISTER)
class AppRegister(TypedDict):
    app_hash: str


@shape_of(A.PERMIT_KEY_ROTATE)
class PermitKeyRotate(TypedDict):
    previous_kid: str | None


@shape_of(A.PERMIT_KEY_RETIRE)
class PermitKeyRetire(TypedDict):
    new_active_kid: str | None


# --- portal: runs -----------------------------------------------------------------------------
@shape_of(A.RUN_START)
class RunStart(TypedDict):
    permit_id: str
    params: dict[str, Any]


@shape_of(A.RUN_SUBMITTED)
class RunState(TypedDict):
    state: str


@shape_of(A.RUN_FAIL)
class RunFail(TypedDict):
    state: str
    error: str | None
    epsilon_per_node: NotRequired[dict[str, Any]]


@shape_of(A.RUN_COMPLETE)
class RunComplete(TypedDict):
    state: str
    epsilon_per_node: dict[str, Any]


@shape_of(A.RUN_TICKET)
class RunTicket(TypedDict):
    ticket_id: str
    flower_run_id: int
    hospital: str | None


@shape_of(A.RUN_RESULTS)
class RunResults(TypedDict):
    status: str | None
    flower_run_id: int


@shape_of(A.RUN_MEMBERS)
class RunMembers(TypedDict):
    flower_run_id: int
    dataset_id: str
    tags: int
    new: int
    hospital: NotRequired[str | None]  # the portal's row: which node sent them


@shape_of(A.RUN_MEMBERS_FAILED)
class RunMembersFailed(TypedDict):
    flower_run_id: int
    dataset_id: str
    tags: int
    problem: str


# --- portal: airlock --------------------------------------------------------------------------
@shape_of(A.OUTPUT_SUBMIT)
class OutputSubmit(TypedDict):
    run_id: str
    permit_id: str
    files: dict[str, str]
    failed_checks: list[str]


@shape_of(A.OUTPUT_APPROVE, A.OUTPUT_REJECT)
class OutputDecision(TypedDict):
    status: str
    rationale: str | None


@shape_of(A.OUTPUT_DOWNLOAD)
class OutputDownload(TypedDict):
    file: str
    sha256: str


# --- portal: consent registry -----------------------------------------------------------------
@shape_of(A.CONSENT_RECORD, A.CONSENT_UPDATE, A.CONSENT_WITHDRAW, A.CONSENT_RECONSENT)
class ConsentChange(TypedDict):
    subject: str
    organisation: str
    purposes: list[str]
    status: str
    valid_from: str | None
    valid_to: str | None
    version: int
    registry_version: int
    reason: NotRequired[str]


@shape_of(A.CONSENT_IMPORT)
class ConsentImport(TypedDict):
    source: str
    organisation: str
    rows: int
    created: int
    updated: int
    withdrawn: int
    unchanged: int
    registry_versions: list[int] | None
    digest: str | None


@shape_of(A.CONSENT_SNAPSHOT)
class ConsentSnapshot(TypedDict):
    hospital_id: str | None
    kind: str
    since: int
    version: int
    consents: int


# --- portal: catalogue, feasibility, synthetic releases, nodes --------------------------------
@shape_of(A.CATALOGUE_PUBLISH)
class CatalogueReceived(TypedDict):
    kind: str
    title: str


@shape_of(A.CATALOGUE_PUBLISH)
class CatalogueSent(TypedDict):
    portal_url: str
    descriptor: dict[str, Any]


@shape_of(A.FEASIBILITY_RUN)
class FeasibilityRun(TypedDict):
    cohort: dict[str, Any]
    cohort_digest: str
    purpose: str
    hospitals: list[str]
    node_map: dict[str, Any]


@shape_of(A.FEASIBILITY_RESULT)
class FeasibilityResult(TypedDict):
    flower_run_id: int
    status: dict[str, Any]


@shape_of(A.SYNTHETIC_PUBLISH)
class SyntheticReceived(TypedDict):
    release_id: str
    files: dict[str, str]
    checks: dict[str, Any]
    rows: int
    columns: list[str]


@shape_of(A.SYNTHETIC_PUBLISH)
class SyntheticSent(TypedDict):
    portal_url: str
    run_id: str
    files: dict[str, str]
    portal_release: str | None


@shape_of(A.SYNTHETIC_WITHDRAW)
class SyntheticTakenDown(TypedDict):
    release_id: str
    reason: str
    files: dict[str, str]


@shape_of(A.SYNTHETIC_WITHDRAW)
class SyntheticWithdrawAsked(TypedDict):
    portal_url: str
    release_id: str
    reason: str


@shape_of(A.SYNTHETIC_DOWNLOAD)
class SyntheticDownload(TypedDict):
    release_id: str
    format: str
    rows: int
    sha256: str
    subject: str


@shape_of(A.NODE_ENROL)
class NodeEnrol(TypedDict):
    node_id: str | int | None
    superlink: str | None
    replaced_node_id: NotRequired[str | int | None]  # the portal's row


# --- portal: audit of the audit ---------------------------------------------------------------
@shape_of(A.AUDIT_CHECKPOINT)
class AuditCheckpoint(TypedDict):
    seq: int
    hash: str


@shape_of(A.AUDIT_CHECKPOINT_REFUSED)
class AuditCheckpointRefused(TypedDict):
    seq: int
    reason: str


@shape_of(A.AUDIT_EXPORT_UPLOAD)
class AuditExportUpload(TypedDict):
    rows: int
    sha256: str


@shape_of(A.AUDIT_EXPORT_REFUSED)
class AuditExportRefused(TypedDict):
    sha256: str
    reason: str


@shape_of(A.AUDIT_EXPORT_READ)
class AuditExportRead(TypedDict):
    sha256: str


@shape_of(A.AUDIT_VERIFICATION)
class AuditVerification(TypedDict):
    ok: bool
    rows: int
    checkpoint_seq: int | None


# --- node: setup, keys, apps, ingestion -------------------------------------------------------
@shape_of(A.NODE_INIT, A.NODE_REENROL)
class NodeInit(TypedDict):
    portal_url: str
    superlink: str | None
    permit_key_ids: list[str]
    credentials: str
    pseudonymiser: str


@shape_of(A.PERMIT_KEY_REFRESH)
class PermitKeyRefresh(TypedDict):
    reason: str
    added: list[str]
    dropped: list[str]
    retired: list[str]


@shape_of(A.APP_REFUSED)
class AppRefused(TypedDict):
    code: str
    reason: str
    fab_hash: str | None
    files: list[str]


@shape_of(A.INGEST_TABLE, A.INGEST_IMAGES, A.INGEST_DICOM, A.INGEST_MEDMNIST)
class Ingest(TypedDict):
    batch_id: str
    pseudonyms: str
    operator: str
    source: str
    params: dict[str, Any]
    ingested: int
    already_present: int
    skipped_by_reason: dict[str, int]
    dataset_created: bool


# --- node: consent ----------------------------------------------------------------------------
@shape_of(A.CONSENT_SYNC)
class ConsentSync(TypedDict):
    kind: str
    since: int
    version: int
    received: int
    consents: int
    portal: str


@shape_of(A.CONSENT_SYNC_FAILED)
class ConsentSyncFailed(TypedDict):
    problem: str
    using_cache_age_s: float
    max_age_s: float


@shape_of(A.CONSENT_REFUSED)
class Refused(TypedDict):
    code: str
    reason: str


@shape_of(A.CONSENT_FILTER)
class ConsentFilter(TypedDict):
    regime: str
    purpose: str
    snapshot_version: int
    snapshot_source: str
    candidates: int
    allowed: int
    excluded: int


# --- node: the gate's reads and refusals (federation/node/authorisation.py, gate.py) ----------
# What a body adds with `ConsentedCohort.read(records, **extra)`: a synthesis its cohort's
# digest, a cohort count its threshold and the datasets it counted.
_READ_EXTRAS: dict[str, Any] = {"cohort_digest": NotRequired[str], "k": NotRequired[int],
                                "datasets": NotRequired[list[str]]}
_READ: dict[str, Any] = {"run_id": str, "dataset_id": str | None, "purpose": str,
                         "split": str, "records": int, "excluded_by_consent": int,
                         "for": str, **_READ_EXTRAS}
#: a read under a permit ("for" is a keyword: the functional form)
PermitRead = shape_of(A.DATA_READ)(TypedDict("PermitRead", {
    **_READ, "permit_id": str, "app_hash": str | None, "revocations": str}))
#: the node operator's own read
OperatorRead = shape_of(A.DATA_READ)(TypedDict("OperatorRead", {**_READ, "by": str}))


@shape_of(A.QUERY_COHORT)
class QueryCohort(TypedDict):
    cohort: dict[str, Any]
    purpose: str
    k: NotRequired[int]
    datasets: NotRequired[list[str]]


@shape_of(A.QUERY_FEASIBILITY)
class QueryFeasibility(TypedDict):
    run_id: str
    cohort: dict[str, Any]
    purpose: str
    ticket_id: str
    researcher: str
    k: NotRequired[int]
    datasets: NotRequired[list[str]]


@shape_of(A.SYNTHETIC_REFUSED)
class GateRefused(TypedDict):
    code: str
    reason: str
    stage: str


@shape_of(A.FEDERATION_REFUSED)
class FederationRefused(GateRefused):
    permit_id: str | None  # as verified, or as the refused token claims it


@shape_of(A.QUERY_REFUSED)
class QueryRefused(GateRefused):
    cohort: NotRequired[dict[str, Any]]


@shape_of(A.QUERY_ANSWER)
class QueryAnswer(TypedDict):
    run_id: str
    permit_id: str
    kind: str
    round: int | None
    weights_sha256: str | None


# --- node: the ε-ledger -----------------------------------------------------------------------
@shape_of(A.PRIVACY_BUDGET_SET)
class PrivacyBudgetSet(TypedDict):
    epsilon_total: float
    previous: float | None


#: the DP accounting a reservation and each charge name (federation/node/ledger.py)
_DP_ACCOUNT: dict[str, Any] = {"epsilon": float, "delta": float, "accountant": str,
                               "noise_multiplier": float, "sample_rate": float}
PrivacyReserve = shape_of(A.PRIVACY_RESERVE)(TypedDict("PrivacyReserve", {
    "reservation_id": str, "run_id": str, "permit_id": str, "dataset_id": str, **_DP_ACCOUNT,
    "steps_per_round": int, "rounds": int, "max_grad_norm": float,
    "remaining_before": float, "permit_used_before": float}))
PrivacyCharge = shape_of(A.PRIVACY_CHARGE)(TypedDict("PrivacyCharge", {
    "run_id": str, "permit_id": str, "reservation_id": str, "round": int, **_DP_ACCOUNT,
    "epsilon_run": float, "steps": int}))


@shape_of(A.PRIVACY_RELEASE)
class PrivacyRelease(TypedDict):
    reservation_id: str
    run_id: str
    epsilon_charged: float
    epsilon_released: float
    reason: str


@shape_of(A.PRIVACY_SETTLE_INTERRUPTED)
class PrivacySettleInterrupted(TypedDict):
    run_id: str
    permit_id: str
    dataset_id: str
    epsilon_reserved: float
    epsilon_charged: float
    epsilon_released: float


# --- node: catalogue and synthetic data -------------------------------------------------------
@shape_of(A.CATALOGUE_PUBLISH_FAILED)
class PublishFailed(TypedDict):
    portal_url: str
    status: int | None
    error: str


@shape_of(A.SYNTHETIC_GENERATE)
class SyntheticGenerate(TypedDict):
    run_id: str
    passed: bool
    failed_checks: list[str]
    checks: dict[str, Any]
    settings: dict[str, Any]
    quality_score: float | None
    excluded_columns: list[dict[str, Any]]
    release_files: dict[str, str]
    cohort_digest: str
    cohort_size: int


@shape_of(A.SYNTHETIC_COHORT_UNCHANGED)
class SyntheticCohortUnchanged(TypedDict):
    run_id: str | None
    cohort_digest: str
    cohort_size: int


@shape_of(A.SYNTHETIC_PUBLISH_FAILED)
class SyntheticPublishFailed(TypedDict):
    run_id: str
    status: int | None
    error: str


@shape_of(A.SYNTHETIC_WITHDRAW_FAILED)
class SyntheticWithdrawFailed(TypedDict):
    release_id: str
    status: int | None
    error: str


# --- pseudonymisation service -----------------------------------------------------------------
@shape_of(A.KEY_CREATE)
class KeyCreate(TypedDict):
    suite: str


@shape_of(A.PSEUDONYM_EVALUATE)
class PseudonymEvaluate(TypedDict):
    count: int
    client_id: str | None


@shape_of(A.PSEUDONYM_REFUSE)
class PseudonymRefuse(PseudonymEvaluate):
    reason: str
    retry_after_s: float




@functools.cache
def fields(shape: type) -> tuple[dict[str, Any], frozenset[str]]:
    """(key -> type, required keys) of a details shape (resolved once: every append asks)."""
    return get_type_hints(shape), shape.__required_keys__


def problems(shape: type, details: dict[str, Any]) -> list[str]:
    """What keeps `details` (in their stored, JSON form) from having `shape`."""
    hints, required = fields(shape)
    found = [f"missing {k!r}" for k in sorted(required - details.keys())]
    found += [f"unknown key {k!r}" for k in sorted(details.keys() - hints.keys())]
    found += [f"{k!r} is {_json_type(v)}, not {_name(hints[k])}" for k, v in sorted(details.items())
              if k in hints and not conforms(v, hints[k])]
    return found


def check(action: AuditAction, details: dict[str, Any]) -> None:
    """Raise AuditDetailsError unless `details` have one of `action`'s shapes."""
    shapes = DETAILS.get(action)
    if shapes is None:
        raise AuditDetailsError(f"audit action {action.value!r} has no details shape in "
                                "tre.core.audit_details.DETAILS")
    found = [problems(shape, details) for shape in shapes]
    if all(found):
        why = "; or ".join(f"as {shape.__name__}: {', '.join(p)}"
                           for shape, p in zip(shapes, found, strict=True))
        raise AuditDetailsError(f"the details of audit action {action.value!r} do not have "
                                f"its shape ({why}); nothing was written")


def conforms(value: Any, expected: Any) -> bool:
    """Whether a JSON value has the type `expected` (str, int, float, bool, None, Any,
    list[T], dict[str, T] and unions of those); an int is a float, a bool no number."""
    origin = get_origin(expected)
    if expected is Any:
        return True
    if expected is None or expected is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(conforms(value, arg) for arg in get_args(expected))
    if origin is list:
        (item,) = get_args(expected)
        return isinstance(value, list) and all(conforms(v, item) for v in value)
    if origin is dict:
        key, item = get_args(expected)
        return isinstance(value, dict) and all(
            conforms(k, key) and conforms(v, item) for k, v in value.items())
    if isinstance(value, bool):
        return expected is bool
    if expected is float:
        return isinstance(value, int | float)
    return isinstance(value, expected)


def _json_type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _name(expected: Any) -> str:
    plain = get_origin(expected) is None and isinstance(expected, type)
    return expected.__name__ if plain else str(expected).replace("typing.", "")
