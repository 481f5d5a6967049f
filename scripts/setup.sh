#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the project under the pinned constraints.
# Idempotent: reinstalls only when pyproject.toml or requirements/constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
stamp=.venv/.lineargan-installed
want=$(cat pyproject.toml requirements/constraints.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
echo "setup: installing lineargan and pinned dependencies into .venv (about 2 minutes)" >&2
# torch is pinned (==2.13.0, the CPU build on this kind of machine) in both files: an unpinned
# torch would pull a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
  -c requirements/constraints.txt torch==2.13.0 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
  -c requirements/constraints.txt -e ".[test,s3]" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import torch, prefect, zarr, dlib, s3fs, selenium, lineargan" \
  || { echo "setup: installation failed" >&2; exit 1; }
echo "$want" > "$stamp"
