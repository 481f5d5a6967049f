"""Prefect flows: ``cache``, ``fit-evaluate`` and ``reproduce`` (which composes them)."""

import os

# Without a server, Prefect starts an ephemeral one and gives it 20 s by default. On a busy
# 2-core machine (Dask workers, a run in the background) start-up can take longer, and the flow
# would die before doing anything; a user's own setting still wins.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
