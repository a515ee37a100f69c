"""A node's settings: one typed, validated object instead of values read ad hoc.

Where a value comes from, highest first:

1. an environment variable `TRE_NODE_<FIELD>` (e.g. `TRE_NODE_SUPPRESSION_K=20`): an
   override for the processes that see it, never written back to node.toml;
2. `node.toml` in the node home, written by `tre node init` (older homes kept some keys
   in an `[extra]` table: they are read as the fields of the same name);
3. for the Keycloak URL and realm only, the shared `TRE_KEYCLOAK_URL` /
   `TRE_KEYCLOAK_REALM` (`tre.core.settings.CommonSettings`): a machine-wide default
   that a node initialised with its own `--keycloak-url` does not follow;
4. the defaults below.

The prefix is `TRE_NODE_`, not the portal's `TRE_`: a portal and a node started from one
shell (the demo, the tests) must not take each other's `superlink` or `suppression_k`.
A key node.toml does not know is refused by name, since a typo would otherwise leave the
default silently in force; a bad value is refused naming its field.
"""

from __future__ import annotations

import json
import re
import tomllib
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tre.core.settings import CommonSettings

ENV_PREFIX = "TRE_NODE_"
HOSPITAL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Older homes' free-form table; its keys are read as top-level settings.
LEGACY_TABLE = "extra"


def _hospital_id(value: str) -> str:
    if not HOSPITAL_ID_RE.match(value):
        raise ValueError("a hospital id is 1-64 letters, digits, '.', '_' or '-'")
    return value


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/?#]+[^\s]*$", value):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


def _optional_http_url(value: str) -> str:
    return _http_url(value) if value else value


def _host_port(value: str) -> str:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be HOST:PORT")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]


def _shared_keycloak_url() -> str:
    return CommonSettings().keycloak_url.rstrip("/")


def _shared_keycloak_realm() -> str:
    return CommonSettings().keycloak_realm


class NodeSettings(BaseSettings):
    """What a node is and how it behaves; `NodeHome.config` loads it (precedence: module
    docstring). Frozen: change node.toml through `NodeHome.update_config`, which checks."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    # this hospital's id in permits, tickets, audit actors and the portal's catalogue
    hospital_id: Annotated[str, AfterValidator(_hospital_id)]
    # the portal the node pulls permit keys, revocations and consents from
    portal_url: HttpUrl
    # the Flower SuperLink's Fleet API the SuperNode dials out to
    superlink: Annotated[str, AfterValidator(_host_port)] = "127.0.0.1:9092"
    # the Keycloak that issues the node's service-account token
    keycloak_url: HttpUrl = Field(default_factory=_shared_keycloak_url)
    # the realm of that Keycloak whose tokens the portal trusts
    keycloak_realm: str = Field(default_factory=_shared_keycloak_realm, min_length=1)
    # counts below k leave the node only as "<k" (small-cell suppression)
    suppression_k: int = Field(default=10, ge=1)
    # older consent snapshots are stale: the node refuses runs until it pulls a new one
    consent_max_age_s: int = Field(default=24 * 3600, gt=0)
    # an older cached revocation list is stale: without a fresh one the node refuses runs
    revocation_max_age_s: float = Field(default=24 * 3600, gt=0)
    # feasibility queries one researcher may ask here per 24 h: many overlapping cohorts
    # could otherwise average the cell-key perturbation away (0: none)
    feasibility_queries_per_day: int = Field(default=50, ge=0)
    # the pseudonymisation service deriving federation-wide pseudonyms; empty: offline,
    # pseudonyms from the node's own key (federation.node.pseudonyms)
    pseudonymiser_url: Annotated[str, AfterValidator(_optional_http_url)] = ""
    # the system of the patient ids ingested when a command names none (e.g. the INS OID)
    identifier_system: str = ""

    #: whether TRE_NODE_ variables override the keywords (node.toml's values)
    read_environment: ClassVar[bool] = True

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment over node.toml's values (given as keywords); no dotenv or
        secrets directory: a node's settings are in its home, where the operator looks."""
        return (env_settings, init_settings) if cls.read_environment else (init_settings,)

    def to_toml(self) -> str:
        """The values given explicitly, not the defaults: a default that a later release
        changes must reach homes that never chose otherwise."""
        values = self.model_dump(exclude_unset=True)
        lines = [f"# node settings (federation.node.settings); {ENV_PREFIX}<KEY> overrides"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
        return "\n".join(lines) + "\n"


class StoredNodeSettings(NodeSettings):
    """node.toml's values alone, checked like `NodeSettings` but without the environment:
    what gets written back (an override of the moment must not become the file's)."""

    read_environment: ClassVar[bool] = False


def parse_node_toml(text: str) -> dict[str, Any]:
    """node.toml's keys, an older home's `[extra]` table lifted to the top level.
    ValueError names a malformed file or a key set twice."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not valid TOML: {exc}") from None
    legacy = data.pop(LEGACY_TABLE, {})
    if not isinstance(legacy, dict):
        raise ValueError(f"{LEGACY_TABLE!r} must be a table")
    for key, value in legacy.items():
        if key in data:
            raise ValueError(f"{key!r} is set both at the top and in [{LEGACY_TABLE}]")
        data[key] = value
    return data


def describe_error(exc: ValidationError, *, environment: bool) -> str:
    """One line naming the first bad field; with `environment`, also the variable that
    could have set it (a value from node.toml or from TRE_NODE_<FIELD>)."""
    errors = exc.errors()
    first = errors[0]
    field = ".".join(str(p) for p in first["loc"]) or "settings"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if first["type"] == "extra_forbidden":
        known = ", ".join(NodeSettings.model_fields)
        return f"unknown setting {field!r}{more}; known settings: {known}"
    message = first["msg"].removeprefix("Value error, ")
    got = f", got {first['input']!r}" if first["type"] != "missing" else ""
    where = f" (node.toml or {ENV_PREFIX}{field.upper()})" if environment else ""
    return f"invalid setting {field}: {message}{got}{where}{more}"
