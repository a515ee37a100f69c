"""Contracts shared by portal and nodes (DESIGN §5): purposes, permit claims,
cohort filters and consent records. Pydantic models so both sides validate alike."""

from __future__ import annotations

import hashlib
from datetime import date
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tre.core.audit import canonical_json

#: FHIR systems of the consent registry: a subject's pseudonym, a consented purpose
PSEUDONYM_SYSTEM = "urn:tre:pseudonym"
PURPOSE_SYSTEM = "urn:tre:consent-purpose"


class Purpose(StrEnum):
    """EHDS secondary-use purposes (Art. 53), plus AI training as a research sub-purpose."""

    PUBLIC_INTEREST_HEALTH = "public_interest_health"
    POLICY_MAKING = "policy_making"
    STATISTICS = "statistics"
    EDUCATION = "education"
    SCIENTIFIC_RESEARCH = "scientific_research"
    AI_TRAINING = "ai_training"
    IMPROVEMENT_OF_CARE = "improvement_of_care"

    def covered_by(self) -> set[Purpose]:
        """Consented purposes that cover this one: AI training is a kind of research."""
        if self is Purpose.AI_TRAINING:
            return {Purpose.AI_TRAINING, Purpose.SCIENTIFIC_RESEARCH}
        return {self}


class PermitStatus(StrEnum):
    """A permit's lifecycle (DESIGN §5): active → expired | revoked | exhausted."""

    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"
    EXHAUSTED = "exhausted"


class ConsentRegime(StrEnum):
    OPT_IN = "opt-in"  # data altruism: only subjects with active consent for the purpose
    OPT_OUT = "opt-out"  # all subjects except those who withdrew / objected for the purpose


class ConsentStatus(StrEnum):
    ACTIVE = "active"
    WITHDRAWN = "withdrawn"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Epsilon = Annotated[float, Field(gt=0, le=100)]
Delta = Annotated[float, Field(gt=0, lt=1e-2)]


class PermitDataset(Strict):
    node_id: str = Field(min_length=1, description="hospital id of the node holding the dataset")
    dataset_id: str = Field(min_length=1)
    epsilon_cap: Epsilon
    delta_cap: Delta


class PermitClaims(Strict):
    """Claims of a permit JWS (signed Ed25519 by the portal, verified by nodes)."""

    iss: str
    permit_id: str
    request_id: str
    sub: str = Field(description="the researcher's Keycloak subject")
    purpose: Purpose
    datasets: list[PermitDataset] = Field(min_length=1)
    app_id: str
    app_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    min_hospitals: int = Field(default=1, ge=1)
    iat: int
    nbf: int
    exp: int

    def dataset_for(self, node_id: str) -> list[PermitDataset]:
        return [d for d in self.datasets if d.node_id == node_id]


class FeasibilityTicket(Strict):
    """Claims of a feasibility ticket: the portal's word (Ed25519, the permit keys) that
    this cohort query came through it, from a logged-in researcher, for these hospitals.
    Nodes answer no feasibility query without one."""

    iss: str
    ticket_id: str
    sub: str = Field(description="the researcher's Keycloak subject")
    purpose: Purpose
    cohort_digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    hospitals: list[str] = Field(min_length=1)
    iat: int
    nbf: int
    exp: int


class RunTicket(Strict):
    """Claims of a run ticket: the portal's word that it submitted this Flower run itself,
    under this permit, with this app, for these hospitals. A permit is a bearer token that
    every node sees in run configs; the ticket binds it to one run, so a permit copied
    into another run (submitted by whoever reached the SuperLink) is refused at every node."""

    iss: str
    ticket_id: str
    run: str = Field(description="the run as nodes name it: flwr-<Flower run id>")
    permit_id: str
    app_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    rounds: int = Field(ge=1)
    hospitals: list[str] = Field(min_length=1)
    iat: int
    nbf: int
    exp: int


class NumericRange(Strict):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> NumericRange:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"range min {self.min} is above max {self.max}")
        return self


class CohortFilter(Strict):
    """What a feasibility count or a node query selects from the common model.
    Every field is optional; absent means 'no restriction'."""

    dataset_id: str | None = None
    modality: list[str] | None = None
    body_site: list[str] | None = None
    label: list[int] | None = None
    sex: list[str] | None = None
    age_min: int | None = Field(default=None, ge=0, le=150)
    age_max: int | None = Field(default=None, ge=0, le=150)
    study_date_from: date | None = None
    study_date_to: date | None = None
    clinical: dict[str, NumericRange] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ranges(self) -> CohortFilter:
        if self.age_min is not None and self.age_max is not None and self.age_min > self.age_max:
            raise ValueError("age_min is above age_max")
        if (
            self.study_date_from is not None
            and self.study_date_to is not None
            and self.study_date_from > self.study_date_to
        ):
            raise ValueError("study_date_from is after study_date_to")
        return self

    def digest(self) -> str:
        """SHA-256 of the canonical JSON: what a feasibility ticket binds a query to."""
        return hashlib.sha256(canonical_json(self.model_dump(mode="json")).encode()).hexdigest()


class ConsentRecord(Strict):
    """One version of a subject's consent as held by the portal registry and sent to nodes."""

    subject: str = Field(min_length=8, description="subject pseudonym (keyed hash)")
    organisation: str = Field(min_length=1)
    purposes: list[Purpose] = Field(min_length=1)
    status: ConsentStatus = ConsentStatus.ACTIVE
    valid_from: date | None = None
    valid_to: date | None = None
