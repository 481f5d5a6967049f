"""Prefect flows: ``cache``, ``fit-evaluate`` and ``reproduce`` (which composes them)."""
