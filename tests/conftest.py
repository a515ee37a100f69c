"""Shared fixtures: real services started once per test session (DESIGN §6)."""

pytest_plugins = [
    "tests.fixtures.keycloak",
    "tests.fixtures.portal",
    "tests.fixtures.browser",
    "tests.fixtures.flower",
    "tests.fixtures.pseudonymiser",
]
