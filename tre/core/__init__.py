"""Foundations every part shares: audit log, DuckDB store, settings, schemas.

Imports nothing else of the project (DESIGN §4).
"""
