"""Pipeline steps as plain functions that compose models, extractors and storage.

Each function is one step of a flow, takes and returns small references (URLs, paths, keys,
configs) and is safe to rerun: finished work is detected from the stores and fit directories
and skipped. ``tasks/`` wraps these in Prefect tasks; tests and benchmarks call them directly.
"""
