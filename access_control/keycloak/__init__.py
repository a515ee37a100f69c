"""The local Keycloak (DESIGN §6): runner (download, verify, start, stop), realm
bootstrap through the admin API, the realm's desired state, and token grants.

The admin-API side is not imported here (python-keycloak is slow to import):
`from access_control.keycloak.bootstrap import admin_client, bootstrap`."""

from access_control.keycloak.oidc import TokenError
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
from access_control.keycloak.runner import (
    KEYCLOAK_VERSION,
    ChecksumError,
    DownloadError,
    JavaNotFoundError,
    KeycloakError,
    KeycloakServer,
    NotRunningError,
    StartupError,
    ensure_running,
    find_java,
    running_server,
    verify_checksum,
)

__all__ = [
    "AUDIENCE", "CLI_CLIENT", "DEFAULT_HOSPITALS", "DEMO_PASSWORD", "DEMO_USERS",
    "KEYCLOAK_VERSION", "PORTAL_CLIENT", "REALM", "ROLES", "ChecksumError", "DownloadError",
    "JavaNotFoundError", "KeycloakError", "KeycloakServer", "NotRunningError", "StartupError",
    "TokenError", "ensure_running", "find_java",
    "node_client_id", "running_server", "verify_checksum",
]
