"""Flower apps of the approved catalogue (node-installed code, named by the FAB shim)."""
