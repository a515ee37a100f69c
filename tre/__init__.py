"""Federated trusted research environment: portal, CLI and shared foundations."""

__version__ = "0.1.0"
