"""What each audit action's `details` hold, in one place (issue 18).

`DETAILS` maps every `AuditAction` to the shape(s) of its details: a TypedDict, or
several where parties write the same action from their side (the portal *received* a
catalogue entry, the node *sent* it). `AuditLog.append` checks a member's details
against them before it writes, inside the writer's transaction, so a misspelt or
missing key fails that write with `AuditDetailsError` instead of leaving a row an
auditor's query cannot find. The check is of the stored form (after the JSON round trip
the hash covers: dates as strings, tuples as lists).

The chain stays generic: `verify`, exports and plain-string actions (other parties'
logs, older rows) are never checked against these shapes.
tests/unit/test_audit_details.py also checks every literal details dict at the write
sites against them, so a mismatch fails in unit tests, before a run reaches it.
"""

import types
from typing import Any, NotRequired, TypedDict, Union, get_args, get_origin, get_type_hints

from tre.core.audit_actions import AuditAction


class AuditDetailsError(ValueError):
    """An audit row's details do not have its action's shape; nothing was written."""


class NoDetails(TypedDict):
    """The action, actor and object say it all."""


# --- portal: access requests and permits ------------------------------------------------------
class RequestCreate(TypedDict):
    title: str
    purpose: str


class RequestUpdate(TypedDict):
    fields: list[str]


class RequestReview(TypedDict):
    decision: str
    round: int
    rationale: str | None


class RequestOutcome(TypedDict):
    reviewers: list[str]


class PermitIssue(TypedDict):
    request_id: str
    epsilon_cap: float
    delta_cap: float
    expires: str
    kid: str


class Reason(TypedDict):
    reason: str


class AppRegister(TypedDict):
    app_hash: str


class PermitKeyRotate(TypedDict):
    previous_kid: str | None


class PermitKeyRetire(TypedDict):
    new_active_kid: str | None


# --- portal: runs -----------------------------------------------------------------------------
class RunStart(TypedDict):
    permit_id: str
    params: dict[str, Any]


class RunState(TypedDict):
    state: str


class RunFail(TypedDict):
    state: str
    error: str | None
    epsilon_per_node: NotRequired[dict[str, Any]]


class RunComplete(TypedDict):
    state: str
    epsilon_per_node: dict[str, Any]


class RunTicket(TypedDict):
    ticket_id: str
    flower_run_id: int
    hospital: str | None


class RunResults(TypedDict):
    status: str | None
    flower_run_id: int


class RunMembers(TypedDict):
    flower_run_id: int
    dataset_id: str
    tags: int
    new: int
    hospital: NotRequired[str | None]  # the portal's row: which node sent them


class RunMembersFailed(TypedDict):
    flower_run_id: int
    dataset_id: str
    tags: int
    problem: str


# --- portal: airlock --------------------------------------------------------------------------
class OutputSubmit(TypedDict):
    run_id: str
    permit_id: str
    files: dict[str, str]
    failed_checks: list[str]


class OutputDecision(TypedDict):
    status: str
    rationale: str | None


class OutputDownload(TypedDict):
    file: str
    sha256: str


# --- portal: consent registry -----------------------------------------------------------------
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


class ConsentSnapshot(TypedDict):
    hospital_id: str | None
    kind: str
    since: int
    version: int
    consents: int


# --- portal: catalogue, feasibility, synthetic releases, nodes --------------------------------
class CatalogueReceived(TypedDict):
    kind: str
    title: str


class CatalogueSent(TypedDict):
    portal_url: str
    descriptor: dict[str, Any]


class FeasibilityRun(TypedDict):
    cohort: dict[str, Any]
    cohort_digest: str
    purpose: str
    hospitals: list[str]
    node_map: dict[str, Any]


class FeasibilityResult(TypedDict):
    flower_run_id: int
    status: dict[str, Any]


class SyntheticReceived(TypedDict):
    release_id: str
    rows: int
    columns: list[str]
    checks: dict[str, Any]
    files: dict[str, str]


class SyntheticSent(TypedDict):
    portal_url: str
    run_id: str
    files: dict[str, str]
    portal_release: str | None


class SyntheticTakenDown(TypedDict):
    release_id: str
    reason: str
    files: dict[str, str]


class SyntheticWithdrawAsked(TypedDict):
    portal_url: str
    release_id: str
    reason: str


class SyntheticDownload(TypedDict):
    release_id: str
    format: str
    rows: int
    sha256: str
    subject: str


class NodeEnrol(TypedDict):
    node_id: str | int | None
    superlink: str | None
    replaced_node_id: NotRequired[str | int | None]  # the portal's row


# --- portal: audit of the audit ---------------------------------------------------------------
class AuditCheckpoint(TypedDict):
    seq: int
    hash: str


class AuditCheckpointRefused(TypedDict):
    seq: int
    reason: str


class AuditExportUpload(TypedDict):
    rows: int
    sha256: str


class AuditExportRefused(TypedDict):
    sha256: str
    reason: str


class AuditExportRead(TypedDict):
    sha256: str


class AuditVerification(TypedDict):
    ok: bool
    rows: int
    checkpoint_seq: int | None


# --- node: setup, keys, apps, ingestion -------------------------------------------------------
class NodeInit(TypedDict):
    portal_url: str
    superlink: str | None
    permit_key_ids: list[str]
    credentials: str
    pseudonymiser: str


class PermitKeyRefresh(TypedDict):
    reason: str
    added: list[str]
    dropped: list[str]
    retired: list[str]


class AppRefused(TypedDict):
    code: str
    reason: str
    fab_hash: str | None
    files: list[str]


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
class ConsentSync(TypedDict):
    kind: str
    since: int
    version: int
    received: int
    consents: int
    portal: str


class ConsentSyncFailed(TypedDict):
    problem: str
    using_cache_age_s: float
    max_age_s: float


class Refused(TypedDict):
    code: str
    reason: str


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
PermitRead = TypedDict("PermitRead", {**_READ, "permit_id": str, "app_hash": str | None,
                                      "revocations": str})
#: the node operator's own read
OperatorRead = TypedDict("OperatorRead", {**_READ, "by": str})


class QueryCohort(TypedDict):
    cohort: dict[str, Any]
    purpose: str
    k: NotRequired[int]
    datasets: NotRequired[list[str]]


class QueryFeasibility(TypedDict):
    run_id: str
    cohort: dict[str, Any]
    purpose: str
    ticket_id: str
    researcher: str
    k: NotRequired[int]
    datasets: NotRequired[list[str]]


class GateRefused(TypedDict):
    code: str
    reason: str
    stage: str


class FederationRefused(GateRefused):
    permit_id: str | None  # as verified, or as the refused token claims it


class QueryRefused(GateRefused):
    cohort: NotRequired[dict[str, Any]]


class QueryAnswer(TypedDict):
    run_id: str
    permit_id: str
    kind: str
    round: int | None
    weights_sha256: str | None


# --- node: the ε-ledger -----------------------------------------------------------------------
class PrivacyBudgetSet(TypedDict):
    epsilon_total: float
    previous: float | None


class PrivacyReserve(TypedDict):
    reservation_id: str
    run_id: str
    permit_id: str
    dataset_id: str
    epsilon: float
    delta: float
    accountant: str
    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    rounds: int
    max_grad_norm: float
    remaining_before: float
    permit_used_before: float


class PrivacyCharge(TypedDict):
    run_id: str
    permit_id: str
    reservation_id: str
    round: int
    epsilon: float
    epsilon_run: float
    delta: float
    accountant: str
    noise_multiplier: float
    sample_rate: float
    steps: int


class PrivacyRelease(TypedDict):
    reservation_id: str
    run_id: str
    epsilon_charged: float
    epsilon_released: float
    reason: str


class PrivacySettleInterrupted(TypedDict):
    run_id: str
    permit_id: str
    dataset_id: str
    epsilon_reserved: float
    epsilon_charged: float
    epsilon_released: float


# --- node: catalogue and synthetic data -------------------------------------------------------
class PublishFailed(TypedDict):
    portal_url: str
    status: int | None
    error: str


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


class SyntheticCohortUnchanged(TypedDict):
    run_id: str | None
    cohort_digest: str
    cohort_size: int


class SyntheticPublishFailed(TypedDict):
    run_id: str
    status: int | None
    error: str


class SyntheticWithdrawFailed(TypedDict):
    release_id: str
    status: int | None
    error: str


# --- pseudonymisation service -----------------------------------------------------------------
class KeyCreate(TypedDict):
    suite: str


class PseudonymEvaluate(TypedDict):
    count: int
    client_id: str | None


class PseudonymRefuse(PseudonymEvaluate):
    reason: str
    retry_after_s: float


A = AuditAction
#: every action's details: one shape, or the alternatives of the parties that write it
DETAILS: dict[AuditAction, tuple[type, ...]] = {
    A.REQUEST_CREATE: (RequestCreate,),
    A.REQUEST_UPDATE: (RequestUpdate,),
    A.REQUEST_SUBMIT: (NoDetails,),
    A.REQUEST_WITHDRAW: (NoDetails,),
    A.REQUEST_REVIEW: (RequestReview,),
    A.REQUEST_APPROVED: (RequestOutcome,),
    A.REQUEST_REJECTED: (RequestOutcome,),
    A.REQUEST_CHANGES_REQUESTED: (RequestOutcome,),
    A.PERMIT_ISSUE: (PermitIssue,),
    A.PERMIT_REVOKE: (Reason,),
    A.PERMIT_EXPIRE: (NoDetails,),
    A.APP_REGISTER: (AppRegister,),
    A.PERMIT_KEY_ROTATE: (PermitKeyRotate,),
    A.PERMIT_KEY_RETIRE: (PermitKeyRetire,),
    A.RUN_START: (RunStart,),
    A.RUN_SUBMITTED: (RunState,),
    A.RUN_TICKET: (RunTicket,),
    A.RUN_CANCEL: (NoDetails,),
    A.RUN_REATTACH: (NoDetails,),
    A.RUN_FAIL: (RunFail,),
    A.RUN_COMPLETE: (RunComplete,),
    A.RUN_RESULTS: (RunResults,),
    A.RUN_MEMBERS: (RunMembers,),
    A.RUN_MEMBERS_FAILED: (RunMembersFailed,),
    A.OUTPUT_SUBMIT: (OutputSubmit,),
    A.OUTPUT_APPROVE: (OutputDecision,),
    A.OUTPUT_REJECT: (OutputDecision,),
    A.OUTPUT_DOWNLOAD: (OutputDownload,),
    A.CONSENT_RECORD: (ConsentChange,),
    A.CONSENT_UPDATE: (ConsentChange,),
    A.CONSENT_WITHDRAW: (ConsentChange,),
    A.CONSENT_RECONSENT: (ConsentChange,),
    A.CONSENT_IMPORT: (ConsentImport,),
    A.CONSENT_SNAPSHOT: (ConsentSnapshot,),
    A.CATALOGUE_PUBLISH: (CatalogueReceived, CatalogueSent),
    A.FEASIBILITY_RUN: (FeasibilityRun,),
    A.FEASIBILITY_RESULT: (FeasibilityResult,),
    A.SYNTHETIC_PUBLISH: (SyntheticReceived, SyntheticSent),
    A.SYNTHETIC_WITHDRAW: (SyntheticTakenDown, SyntheticWithdrawAsked),
    A.SYNTHETIC_DOWNLOAD: (SyntheticDownload,),
    A.NODE_ENROL: (NodeEnrol,),
    A.STORE_BACKUP: (NoDetails,),
    A.AUDIT_CHECKPOINT: (AuditCheckpoint,),
    A.AUDIT_CHECKPOINT_REFUSED: (AuditCheckpointRefused,),
    A.AUDIT_EXPORT_UPLOAD: (AuditExportUpload,),
    A.AUDIT_EXPORT_REFUSED: (AuditExportRefused,),
    A.AUDIT_EXPORT_READ: (AuditExportRead,),
    A.AUDIT_VERIFICATION: (AuditVerification,),
    A.NODE_INIT: (NodeInit,),
    A.NODE_REENROL: (NodeInit,),
    A.PERMIT_KEY_REFRESH: (PermitKeyRefresh,),
    A.APP_REFUSED: (AppRefused,),
    A.INGEST_TABLE: (Ingest,),
    A.INGEST_IMAGES: (Ingest,),
    A.INGEST_DICOM: (Ingest,),
    A.INGEST_MEDMNIST: (Ingest,),
    A.CONSENT_SYNC: (ConsentSync,),
    A.CONSENT_SYNC_FAILED: (ConsentSyncFailed,),
    A.CONSENT_REFUSED: (Refused,),
    A.CONSENT_FILTER: (ConsentFilter,),
    A.DATA_READ: (PermitRead, OperatorRead),
    A.FEDERATION_REFUSED: (FederationRefused,),
    A.QUERY_ANSWER: (QueryAnswer,),
    A.QUERY_COHORT: (QueryCohort,),
    A.QUERY_FEASIBILITY: (QueryFeasibility,),
    A.QUERY_REFUSED: (QueryRefused,),
    A.PRIVACY_BUDGET_SET: (PrivacyBudgetSet,),
    A.PRIVACY_RESERVE: (PrivacyReserve,),
    A.PRIVACY_CHARGE: (PrivacyCharge,),
    A.PRIVACY_RELEASE: (PrivacyRelease,),
    A.PRIVACY_SETTLE_INTERRUPTED: (PrivacySettleInterrupted,),
    A.CATALOGUE_PUBLISH_FAILED: (PublishFailed,),
    A.SYNTHETIC_GENERATE: (SyntheticGenerate,),
    A.SYNTHETIC_COHORT_UNCHANGED: (SyntheticCohortUnchanged,),
    A.SYNTHETIC_REFUSED: (GateRefused,),
    A.SYNTHETIC_PUBLISH_REFUSED: (Reason,),
    A.SYNTHETIC_PUBLISH_FAILED: (SyntheticPublishFailed,),
    A.SYNTHETIC_WITHDRAW_FAILED: (SyntheticWithdrawFailed,),
    A.KEY_CREATE: (KeyCreate,),
    A.PSEUDONYM_EVALUATE: (PseudonymEvaluate,),
    A.PSEUDONYM_REFUSE: (PseudonymRefuse,),
}
del A


def fields(shape: type) -> tuple[dict[str, Any], frozenset[str]]:
    """(key -> type, required keys) of a details shape."""
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
