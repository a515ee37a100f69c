"""Domain errors raised by services; the app maps each to one HTTP status."""

from __future__ import annotations


class DomainError(Exception):
    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    status_code = 404


class Forbidden(DomainError):
    status_code = 403


class Conflict(DomainError):
    """The object is not in a state that allows this (e.g. submit an approved request)."""

    status_code = 409


class Gone(DomainError):
    """The object existed and was withdrawn on purpose (e.g. a synthetic release)."""

    status_code = 410


class Invalid(DomainError):
    status_code = 422


class Unavailable(DomainError):
    """A party the portal depends on (the SuperLink) cannot do this now."""

    status_code = 503


class Unauthenticated(DomainError):
    status_code = 401
