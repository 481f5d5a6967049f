"""Prefect flows: ``cache``, ``fit-evaluate`` and ``reproduce`` (which composes them).

Settings every flow process needs are set here, before anything imports Prefect.
"""

import os

# Without a server, Prefect starts an ephemeral one and gives it 20 s by default. On a busy
# 2-core machine (Dask workers, a run in the background) start-up can take longer, and the flow
# would die before doing anything; a user's own setting still wins.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# The temporary server's telemetry heartbeat phones home (unreachable offline) and writes to
# the server's SQLite database, where under load it meets "database is locked" and prints a
# 100-line traceback beside the run's output. The run needs none of it; a user's setting wins.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
