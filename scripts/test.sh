#!/usr/bin/env bash
# Install (if needed), check style (ruff lint and format) and the one-way layering
# (import-linter), and run the whole test suite in random order (pytest-randomly), including
# the slow end-to-end tests that start a flow, a Prefect server and worker or a subprocess, and
# the browser test (headless Chromium, installed here when missing). Extra arguments go to pytest
# (e.g. -m "not slow", or -p no:randomly to keep file order).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the browser test of `lineargan-edit serve` drives Debian's headless Chromium (as root here)
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "test: installing chromium and chromium-driver for the browser test" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    chromium chromium-driver >/dev/null
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache
set +e
.venv/bin/python -m pytest tests "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests" >&2
  exit 0
fi
exit "$rc"
