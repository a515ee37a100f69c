"""What can go wrong with the local Keycloak, as errors a user can act on."""

from __future__ import annotations


class KeycloakError(RuntimeError):
    """Something the user can act on; the message is one line saying what and how."""


class DownloadError(KeycloakError):
    pass


class ChecksumError(KeycloakError):
    pass


class JavaNotFoundError(KeycloakError):
    pass


class StartupError(KeycloakError):
    pass


class NotRunningError(KeycloakError):
    pass
