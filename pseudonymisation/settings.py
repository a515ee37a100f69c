"""The pseudonymisation service's one settings object (env prefix `TRE_PSEUDONYMISER_`).

Its own prefix, not the portal's `TRE_`: the service is another party, often run by
another organisation, and must not pick up the portal's configuration by accident.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

HOME_ENV = "TRE_PSEUDONYMISER_HOME"
# one blinded element in the body: 43-44 base64url characters, quotes and a comma
BYTES_PER_ELEMENT = 48


def default_home() -> Path:
    """$TRE_PSEUDONYMISER_HOME, else ./pseudonymiser-home."""
    return Path(os.environ.get(HOME_ENV) or "pseudonymiser-home")


class PseudonymiserSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRE_PSEUDONYMISER_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    host: str = "127.0.0.1"
    port: int = 8600
    keycloak_url: str = "http://127.0.0.1:8180"
    keycloak_realm: str = "tre"
    # Keycloak gives every token of the realm this audience today (see README: the portal
    # could replay a caller's token here; a dedicated audience closes that)
    audience: str = "tre-portal"
    max_batch: int = Field(default=10_000, ge=1)
    # elements one caller (token subject) may have evaluated per minute, as a token bucket
    # that holds one minute's worth: a burst of a whole minute, then the steady rate
    rate_per_minute: int = Field(default=120_000, ge=1)

    @model_validator(mode="after")
    def _batch_fits_the_bucket(self) -> PseudonymiserSettings:
        if self.max_batch > self.rate_per_minute:
            raise ValueError(f"max_batch {self.max_batch} is above rate_per_minute "
                             f"{self.rate_per_minute}: such a batch could never be served")
        return self

    @property
    def issuer_url(self) -> str:
        return f"{self.keycloak_url.rstrip('/')}/realms/{self.keycloak_realm}"

    @property
    def max_body_bytes(self) -> int:
        return self.max_batch * BYTES_PER_ELEMENT + 1024
