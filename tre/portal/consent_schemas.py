"""Bodies of the consent registry API (DESIGN §5 Consent; DGA data altruism).

One consent per (organisation, subject pseudonym); every change is a new version
and the registry keeps all of them, so a withdrawal never deletes anything.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tre.core.run_members import MAX_TAGS_PER_REPORT, TAG_PATTERN
from tre.core.schemas import ConsentStatus, Purpose

SubjectId = Annotated[
    str, Field(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$",
               description="subject pseudonym (keyed hash of the local patient id)")
]
OrganisationId = Annotated[
    str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")
]
Note = Annotated[str, Field(max_length=2_000)]

PURPOSE_LABELS: dict[Purpose, str] = {
    Purpose.PUBLIC_INTEREST_HEALTH: "Public interest in the area of public and occupational health",
    Purpose.POLICY_MAKING: "Policy making and regulatory activities",
    Purpose.STATISTICS: "Official statistics",
    Purpose.EDUCATION: "Education and teaching in health or care",
    Purpose.SCIENTIFIC_RESEARCH: "Scientific research related to health or care",
    Purpose.AI_TRAINING: "Training, testing and evaluating AI systems (a kind of research)",
    Purpose.IMPROVEMENT_OF_CARE: "Improvement of health care delivery and personalised care",
}


def canonical_purposes(purposes: list[Purpose]) -> list[Purpose]:
    """Sorted and without duplicates, so that equal consents compare equal everywhere."""
    return sorted(set(purposes), key=lambda p: p.value)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Period(Strict):
    @model_validator(mode="after")
    def _ordered(self) -> _Period:
        start, end = getattr(self, "valid_from", None), getattr(self, "valid_to", None)
        if start is not None and end is not None and start > end:
            raise ValueError(f"valid_from {start} is after valid_to {end}")
        return self


class ConsentIn(_Period):
    """A consent (or, with status `withdrawn`, an objection) as a steward records it."""

    subject: SubjectId
    purposes: list[Purpose] = Field(min_length=1, max_length=len(Purpose))
    status: ConsentStatus = ConsentStatus.ACTIVE
    valid_from: date | None = None
    valid_to: date | None = None
    organisation: OrganisationId | None = Field(
        default=None, description="defaults to the steward's own organisation")
    note: Note | None = None


class ConsentPatch(_Period):
    """Only the fields given change; `status: active` re-activates a withdrawn consent."""

    purposes: list[Purpose] | None = Field(default=None, min_length=1, max_length=len(Purpose))
    valid_from: date | None = None
    valid_to: date | None = None
    status: ConsentStatus | None = None
    note: Note | None = None


class WithdrawIn(Strict):
    reason: Note | None = None


class PurposeChoice(Strict):
    """A person's own choice for one purpose (`/v1/me/purposes/{purpose}`)."""

    status: ConsentStatus = Field(description="`active` gives consent, `withdrawn` "
                                  "withdraws it (or objects)")
    reason: Note | None = None


class BulkImportIn(Strict):
    consents: list[ConsentIn] = Field(min_length=1, max_length=10_000)


class ConsentVersion(BaseModel):
    version: int
    registry_version: int
    change: str
    status: ConsentStatus
    purposes: list[Purpose]
    valid_from: date | None
    valid_to: date | None
    source: str
    note: str | None
    recorded_by: str
    recorded_at: datetime
    audit_seq: int | None


class Consent(BaseModel):
    id: str
    subject: str
    organisation: str
    purposes: list[Purpose]
    status: ConsentStatus
    valid_from: date | None
    valid_to: date | None
    version: int
    registry_version: int
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str
    history: list[ConsentVersion] | None = None


class ImportResult(BaseModel):
    created: int
    updated: int
    withdrawn: int
    unchanged: int
    registry_version: int
    audit_seq: int | None
    consent_ids: list[str] | None = Field(
        default=None, description="ids in input order (imports of up to 1000 consents)")


class SnapshotEntry(BaseModel):
    consent_id: str
    subject: str
    organisation: str
    purposes: list[Purpose]
    status: ConsentStatus
    valid_from: date | None
    valid_to: date | None
    version: int


class Snapshot(BaseModel):
    """What a node pulls: the current state of every consent changed after `since`."""

    kind: str = Field(description="'full' (replace the cache) or 'delta' (upsert by consent_id)")
    since: int
    version: int
    generated_at: datetime
    total: int = Field(description="consents in the registry at `version`: what a node's "
                       "cache holds once this is installed")
    consents: list[SnapshotEntry]


class MyConsents(BaseModel):
    """A person's consents across every organisation, under their federation pseudonym."""

    subject: str
    items: list[Consent]


# -- which runs used a person's records ---------------------------------------------------

class RunMembersIn(Strict):
    """What a node reports of one run: the membership tags (`tre.core.run_members`) of
    the people in one dataset's consented cohort; it may report a run more than once."""

    dataset_id: Annotated[str, Field(min_length=1, max_length=100,
                                     pattern=r"^[A-Za-z0-9._:-]+$")]
    tags: list[Annotated[str, Field(pattern=TAG_PATTERN)]] = Field(
        min_length=1, max_length=MAX_TAGS_PER_REPORT)


class RunMembersOut(BaseModel):
    new: int = Field(description="tags this report added (the others were known)")


class MyRun(BaseModel):
    """A run that used the person's records: project-level facts only."""

    run_id: str
    permit_id: str
    title: str
    organisation: str
    purpose: str
    started_at: datetime
    state: str
    hospitals: int = Field(description="hospitals where the run used your records")


class MyRuns(BaseModel):
    items: list[MyRun]
