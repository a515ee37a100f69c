"""Request and response bodies of the portal API (EHDS data-access application fields)."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from federation.launch.columns import table_spec
from federation.launch.models import MODEL_KINDS
from federation.launch.params import RunParams, check_param, param_bounds, param_default
from tre.core.schemas import CohortFilter, Purpose

# Control characters (tab and newlines aside), bidirectional overrides and isolates, and
# unpaired surrogates: text that would display other than it reads, or not encode at all.
UNSAFE_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e"
                         "\u2066-\u2069\ud800-\udfff]")


def plain_text(text: str) -> str:
    """Text as people will read it: NFC-normalised, not blank, and free of characters
    that hide or reorder what is displayed."""
    if UNSAFE_TEXT.search(text):
        raise ValueError("holds a control, bidirectional-override or unpaired surrogate "
                         "character")
    text = unicodedata.normalize("NFC", text)
    if not text.strip():
        raise ValueError("is blank")
    return text


def zoned_time(text: str) -> str:
    """An ISO 8601 time with its offset: the register and `/metrics` read it as a time."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise ValueError("has no UTC offset")
    return text


ShortText = Annotated[str, Field(min_length=1, max_length=300), AfterValidator(plain_text)]
LongText = Annotated[str, Field(min_length=1, max_length=10_000), AfterValidator(plain_text)]
Rationale = Annotated[str, Field(min_length=10, max_length=10_000), AfterValidator(plain_text)]
# Numbers are numbers: no strings or booleans coerced, finite, and bounded.
Epsilon = Annotated[float, Field(gt=0, le=100, strict=True, allow_inf_nan=False)]
Delta = Annotated[float, Field(gt=0, lt=1e-2, strict=True, allow_inf_nan=False)]
Days = Annotated[int, Field(ge=1, le=1825, strict=True)]
HospitalCount = Annotated[int, Field(ge=1, le=1000, strict=True)]
Identifier = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")]
AppId = Annotated[str, Field(min_length=1, max_length=100,
                             pattern=r"^[A-Za-z0-9._:-]+(/[A-Za-z0-9._:-]+)?$")]


class LegalBasis(StrEnum):
    EHDS_DATA_PERMIT = "ehds_art_68_data_permit"
    GDPR_PUBLIC_INTEREST = "gdpr_6_1_e_9_2_i"
    GDPR_RESEARCH = "gdpr_6_1_e_9_2_j"
    EXPLICIT_CONSENT = "gdpr_6_1_a_9_2_a"


class DataForm(StrEnum):
    PSEUDONYMISED = "pseudonymised"
    ANONYMISED = "anonymised"


class RequestState(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    IN_REVIEW = "in_review"
    APPROVED = "approved"
    REJECTED = "rejected"
    CHANGES_REQUESTED = "changes_requested"
    WITHDRAWN = "withdrawn"


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    REQUEST_CHANGES = "request_changes"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetRef(Strict):
    node_id: Identifier
    dataset_id: Identifier


class RequestFields(Strict):
    title: ShortText
    organisation: ShortText
    purpose: Purpose
    research_question: LongText
    datasets: list[DatasetRef] = Field(min_length=1, max_length=50)
    variables: list[ShortText] = Field(default_factory=list, max_length=500)
    epsilon: Epsilon = Field(description="requested privacy budget per dataset")
    delta: Delta
    app_id: AppId
    duration_days: Days
    legal_basis: LegalBasis
    data_form: DataForm
    expected_outputs: LongText
    ethics_reference: Annotated[str, Field(max_length=300)] | None = None
    min_hospitals: HospitalCount = 1


class RequestPatch(Strict):
    """Every field optional: only those given change."""

    title: ShortText | None = None
    organisation: ShortText | None = None
    purpose: Purpose | None = None
    research_question: LongText | None = None
    datasets: list[DatasetRef] | None = Field(default=None, min_length=1, max_length=50)
    variables: list[ShortText] | None = Field(default=None, max_length=500)
    epsilon: Epsilon | None = None
    delta: Delta | None = None
    app_id: AppId | None = None
    duration_days: Days | None = None
    legal_basis: LegalBasis | None = None
    data_form: DataForm | None = None
    expected_outputs: LongText | None = None
    ethics_reference: Annotated[str, Field(max_length=300)] | None = None
    min_hospitals: HospitalCount | None = None


class AccessRequest(RequestFields):
    model_config = ConfigDict(extra="ignore")

    id: str
    applicant_sub: str
    applicant_username: str
    status: RequestState
    review_round: int
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None = None
    decided_at: datetime | None = None
    permit_id: str | None = None
    days_elapsed: float | None = None
    reviews: list[dict[str, Any]] = Field(default_factory=list)


class Conditions(Strict):
    """Conditions an approving reviewer may attach; the permit takes the strictest."""

    epsilon: Epsilon | None = None
    duration_days: Days | None = None


class ReviewIn(Strict):
    decision: Decision
    rationale: Rationale
    conditions: Conditions | None = None


#: Why a state change was made, shown to those it affects (a revocation, a withdrawal).
Reason = Annotated[str, Field(min_length=5, max_length=2_000), AfterValidator(plain_text)]


class RevokeIn(Strict):
    reason: Reason


class WithdrawIn(Strict):
    """Why a synthetic release is withdrawn: researchers see it in the 410 answer."""

    reason: Reason


class AppIn(Strict):
    app_id: AppId
    app_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    description: ShortText


class DatasetKind(StrEnum):
    IMAGING = "imaging"
    CLINICAL = "clinical"


class DatasetDescriptorIn(Strict):
    """What a node publishes: never row-level values, counts already suppressed."""

    hospital_id: Identifier
    dataset_id: Identifier
    kind: DatasetKind
    title: ShortText
    descriptor: dict[str, Any]


class OutputDecision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class OutputReviewIn(Strict):
    decision: OutputDecision
    rationale: Rationale


def _run_param(name: str, **extra: Any) -> Any:
    """A RunIn field with the default and bounds of RunParams' field `name`: the run
    contract (`federation.launch.params`) defines them once, for the API and the nodes."""
    return Field(default=param_default(name), strict=True, **param_bounds(name), **extra)


def _run_choice(name: str) -> AfterValidator:
    """The RunParams check of a field with allowed values (model ids, strategies)."""
    return AfterValidator(lambda value: check_param(name, value))


class RunIn(Strict):
    """A training run under a permit; privacy bounds default to the permit's caps."""

    permit_id: Identifier
    model: Annotated[Identifier, _run_choice("model")] = param_default("model")
    rounds: int = _run_param("rounds")
    local_epochs: int = _run_param("local_epochs")
    batch_size: int = _run_param("batch_size")
    lr: float = _run_param("lr", allow_inf_nan=False)
    strategy: Annotated[Identifier, _run_choice("strategy")] = param_default("strategy")
    server_lr: float = _run_param("server_lr", allow_inf_nan=False)
    server_momentum: float = _run_param("server_momentum", allow_inf_nan=False)
    epsilon: Epsilon | None = None
    delta: Delta | None = None
    min_hospitals: HospitalCount | None = None
    seed: int = _run_param("seed")
    secagg: bool | None = None
    """Secure aggregation (SecAgg+); None: on from three hospitals up (RunParams.resolved)."""
    features: str = _run_param("features", max_length=8000)
    label: str = _run_param("label", max_length=1000)
    """A table model's columns (`federation.launch.columns`); a label's categories, when
    named, give the run's number of classes, and a threshold label (`target>140`) two."""

    @model_validator(mode="after")
    def _columns(self) -> RunIn:
        """Columns that parse, and only for a model that reads a table: a table run
        without them, or an image run with them, is refused here (a 422) rather than
        started and refused at every node."""
        spec = table_spec(self.features, self.label)  # ValueError names the field
        named = bool(spec.features) or spec.label is not None
        if MODEL_KINDS[self.model] == "clinical" and not (spec.features and spec.label):
            raise ValueError(f"features and label: model {self.model!r} trains on a table; "
                             "name its feature columns and its label")
        if MODEL_KINDS[self.model] != "clinical" and named:
            raise ValueError(f"features and label: model {self.model!r} trains on images "
                             "and reads no table columns")
        return self

    def run_params(self, *, permit: str, hospitals: int, min_hospitals: int, node_map: str,
                   round_timeout: int) -> RunParams:
        """The run's parameters, `secagg` decided for the permit's `hospitals` so that
        what the portal stores and shows is what the run does."""
        return RunParams(
            permit=permit, model=self.model, rounds=self.rounds,
            local_epochs=self.local_epochs, batch_size=self.batch_size, lr=self.lr,
            strategy=self.strategy, server_lr=self.server_lr,
            server_momentum=self.server_momentum, target_epsilon=self.epsilon or 0.0,
            delta=self.delta or 0.0, min_nodes=min_hospitals, seed=self.seed,
            secagg=self.secagg, node_map=node_map, round_timeout=round_timeout,
            features=self.features, label=self.label, num_classes=self._classes(),
        ).resolved(hospitals)

    def _classes(self) -> int:
        label = table_spec(self.features, self.label).label
        classes = label.classes if label is not None else None
        return classes if classes is not None else param_default("num_classes")


class FeasibilityIn(Strict):
    """A feasibility count: a cohort over the common model, optionally one dataset id
    (the cohort's `dataset_id`), sent to every hospital that published a match."""

    cohort: CohortFilter = Field(default_factory=CohortFilter)
    purpose: Purpose = Purpose.SCIENTIFIC_RESEARCH
    hospitals: list[Identifier] | None = None


class CheckpointIn(Strict):
    """A node's audit chain head, signed with its enrolled key (tre.core.checkpoints)."""

    seq: int = Field(ge=0, le=2**62, strict=True)
    hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    at: Annotated[str, Field(min_length=10, max_length=40,
                             pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.+Z-]+$"),
                  AfterValidator(zoned_time)]
    signature: Annotated[str, Field(min_length=16, max_length=400,
                                    pattern=r"^[A-Za-z0-9+/=]+$")]


Party = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class AuditExportIn(Strict):
    """A node's whole audit log as JSON Lines, signed with its enrolled key
    (tre.core.checkpoints.SignedExport): audit rows only, never records."""

    jsonl: str
    signature: Annotated[str, Field(min_length=16, max_length=400,
                                    pattern=r"^[A-Za-z0-9+/=]+$")]


class VerificationIn(Strict):
    """What an auditor found checking a party's log against its checkpoints."""

    party: Party
    ok: bool = Field(strict=True)
    rows: int = Field(ge=0, le=2**62, strict=True)
    checkpoint_seq: int | None = Field(default=None, ge=0, le=2**62, strict=True)
    problem: Annotated[str, Field(max_length=1000)] | None = None


class NodeKeyIn(Strict):
    """A SuperNode's public key (OpenSSH, NIST EC curve) registered at enrolment."""

    public_key: str = Field(min_length=40, max_length=2000)
