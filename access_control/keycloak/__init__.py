"""The local Keycloak (DESIGN §6): the distribution (download, verify), the Java that
runs it, the server (start, stop, status), where their files live (paths), realm
bootstrap through the admin API, the realm's desired state, and token grants.

The admin-API side is not imported here (python-keycloak is slow to import):
`from access_control.keycloak.bootstrap import admin_client, bootstrap`."""

from access_control.keycloak.distribution import KEYCLOAK_VERSION, verify_checksum
from access_control.keycloak.errors import (
    ChecksumError,
    DownloadError,
    JavaNotFoundError,
    KeycloakError,
    NotRunningError,
    StartupError,
)
from access_control.keycloak.java import find_java
from access_control.keycloak.oidc import GrantError
from access_control.keycloak.realm import (
    AUDIENCE,
    CLI_CLIENT,
    DEFAULT_HOSPITALS,
    DEMO_PASSWORD,
    DEMO_USERS,
    PORTAL_CLIENT,
    REALM,
    ROLES,
    node_client_id,
)
from access_control.keycloak.server import KeycloakServer, ensure_running, running_server

__all__ = [
    "AUDIENCE", "CLI_CLIENT", "DEFAULT_HOSPITALS", "DEMO_PASSWORD", "DEMO_USERS",
    "KEYCLOAK_VERSION", "PORTAL_CLIENT", "REALM", "ROLES", "ChecksumError", "DownloadError",
    "JavaNotFoundError", "KeycloakError", "KeycloakServer", "NotRunningError", "StartupError",
    "GrantError", "ensure_running", "find_java",
    "node_client_id", "running_server", "verify_checksum",
]
