"""Request and response bodies of the portal API (EHDS data-access application fields)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from tre.core.schemas import CohortFilter, Purpose

ShortText = Annotated[str, Field(min_length=1, max_length=300)]
LongText = Annotated[str, Field(min_length=1, max_length=10_000)]
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
    epsilon: float = Field(gt=0, le=100, description="requested privacy budget per dataset")
    delta: float = Field(gt=0, lt=1e-2)
    app_id: AppId
    duration_days: int = Field(ge=1, le=1825)
    legal_basis: LegalBasis
    data_form: DataForm
    expected_outputs: LongText
    ethics_reference: Annotated[str, Field(max_length=300)] | None = None
    min_hospitals: int = Field(default=1, ge=1)


class RequestPatch(Strict):
    """Every field optional: only those given change."""

    title: ShortText | None = None
    organisation: ShortText | None = None
    purpose: Purpose | None = None
    research_question: LongText | None = None
    datasets: list[DatasetRef] | None = Field(default=None, min_length=1, max_length=50)
    variables: list[ShortText] | None = Field(default=None, max_length=500)
    epsilon: float | None = Field(default=None, gt=0, le=100)
    delta: float | None = Field(default=None, gt=0, lt=1e-2)
    app_id: AppId | None = None
    duration_days: int | None = Field(default=None, ge=1, le=1825)
    legal_basis: LegalBasis | None = None
    data_form: DataForm | None = None
    expected_outputs: LongText | None = None
    ethics_reference: Annotated[str, Field(max_length=300)] | None = None
    min_hospitals: int | None = Field(default=None, ge=1)


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

    epsilon: float | None = Field(default=None, gt=0, le=100)
    duration_days: int | None = Field(default=None, ge=1, le=1825)


class ReviewIn(Strict):
    decision: Decision
    rationale: Annotated[str, Field(min_length=10, max_length=10_000)]
    conditions: Conditions | None = None


class RevokeIn(Strict):
    reason: Annotated[str, Field(min_length=5, max_length=2_000)]


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
    rationale: Annotated[str, Field(min_length=10, max_length=10_000)]


class RunIn(Strict):
    """A training run under a permit; privacy bounds default to the permit's caps."""

    permit_id: Identifier
    model: Identifier = "cnn-gn"
    rounds: int = Field(default=3, ge=1, le=100)
    local_epochs: int = Field(default=1, ge=1, le=50)
    batch_size: int = Field(default=128, ge=1, le=4096)
    lr: float = Field(default=0.5, gt=0, le=10)
    strategy: Annotated[str, Field(pattern=r"^(fedavg|fedprox)$")] = "fedavg"
    epsilon: float | None = Field(default=None, gt=0, le=100)
    delta: float | None = Field(default=None, gt=0, lt=1e-2)
    min_hospitals: int | None = Field(default=None, ge=1)
    seed: int = 0


class FeasibilityIn(Strict):
    """A feasibility count: a cohort over the common model, optionally one dataset id
    (the cohort's `dataset_id`), sent to every hospital that published a match."""

    cohort: CohortFilter = Field(default_factory=CohortFilter)
    purpose: Purpose = Purpose.SCIENTIFIC_RESEARCH
    hospitals: list[Identifier] | None = None


class NodeKeyIn(Strict):
    """A SuperNode's public key (OpenSSH, NIST EC curve) registered at enrolment."""

    public_key: str = Field(min_length=40, max_length=2000)
