"""The portal's one settings object (env prefix `TRE_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from tre.core.settings import CommonSettings, cache_dir


def _default_state_dir() -> Path:
    return cache_dir() / "portal"


class PortalSettings(CommonSettings):
    state_dir: Path = Field(default_factory=_default_state_dir)
    db_path: Path | None = None
    permit_keys_path: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8400
    public_url: str | None = None
    review_quorum: int = Field(default=1, ge=1)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Routes that take files (a node's synthetic table, reports and plots) get this limit.
    max_upload_bytes: int = Field(default=64 * 1_048_576, ge=1024)
    permit_issuer: str = "tre-portal"
    suppression_k: int = 10
    # Web UI (tre.portal.web): the browser logs in through the confidential OIDC client.
    session_secret: SecretStr | None = None  # default: generated once into state_dir, 0600
    oidc_client_id: str = "tre-portal"
    oidc_client_secret: SecretStr | None = None
    session_idle_s: int = Field(default=8 * 3600, ge=60)
    superlink: str = "127.0.0.1:9093"
    superlink_insecure: bool = True
    # CA certificate that signed the SuperLink's TLS certificate (when not insecure)
    superlink_root_certificates: Path | None = None
    # the SuperLink's report key (base64 X25519, `tre federation superlink` prints it): each
    # run's results credential is sealed to it, so no hospital can read and use it
    superlink_report_key: str | None = None
    feasibility_timeout_s: float = Field(default=180, gt=0)
    # how long a round waits for a node that went silent before going on without it
    run_round_timeout_s: int = Field(default=1800, ge=10)
    run_timeout_s: float = Field(default=6 * 3600, gt=0)
    airlock_mia_max_advantage: float = Field(default=0.1, ge=0, le=1)
    # how long a write trusts Keycloak's "this session is alive" (access_control.sessions)
    session_check_ttl_s: float = Field(default=30.0, ge=0, le=30)
    # the portal signs its audit head at least this often, on quiet days too
    checkpoint_interval_s: float = Field(default=24 * 3600, gt=0)
    # A citizen's view (/v1/me): the pseudonymisation service that turns the identifier
    # in a citizen's token into their pseudonym, the CA of its TLS certificate, and the
    # organisation a person's own consents are recorded under
    pseudonymiser_url: str | None = None
    pseudonymiser_ca: Path | None = None
    citizen_organisation: str = Field(default="self", pattern=r"^[A-Za-z0-9._:-]{1,100}$")

    @property
    def database(self) -> Path:
        return self.db_path or self.state_dir / "portal.duckdb"

    @property
    def keys(self) -> Path:
        return self.permit_keys_path or self.state_dir / "permit-keys.json"

    @property
    def issuer_url(self) -> str:
        return f"{self.keycloak_url.rstrip('/')}/realms/{self.keycloak_realm}"

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def cookie_secure(self) -> bool:
        """Session cookies carry the Secure flag whenever the portal is served over TLS."""
        return self.base_url.startswith("https://")
