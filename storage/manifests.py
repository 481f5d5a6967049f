"""Manifests: small JSON files whose presence marks a finished unit of work (written last)."""

from __future__ import annotations

import json

from storage.layout import manifest_target


def load_manifest(results_root: str, name: str) -> dict | None:
    """The manifest ``name`` as a dict, or None while that work is unfinished."""
    target = manifest_target(results_root, name)
    if not target.exists():
        return None
    return json.loads(target.read_bytes())


def save_manifest(results_root: str, name: str, data: dict) -> str:
    """Write manifest ``name`` atomically; call it after everything it vouches for."""
    target = manifest_target(results_root, name)
    target.write_bytes_atomic(json.dumps(data, indent=2).encode())
    return target.url
