"""Processes for the object-storage tests: a local S3 server (moto) and a Dask cluster started
as separate scheduler and worker processes, all bound to 127.0.0.1 and stopped by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.e2e_helpers import ROOT

BIN = Path(sys.executable).parent
BUCKET = "lineargan-test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def s3_env(endpoint: str, tmp: Path) -> dict[str, str]:
    """Dummy credentials and the endpoint, as environment variables: botocore (hence s3fs,
    zarr and pandas) reads ``AWS_ENDPOINT_URL``, and every process started with this
    environment (flow, scheduler, workers) reaches the same server. A user's own AWS
    configuration files are hidden so they cannot redirect the test."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
    }


def storage_options(endpoint: str) -> dict:
    """What a user outside the test environment passes to pandas / zarr to read the results."""
    return {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint},
        # a fresh filesystem per read: a cached one remembers the ETags of parts a rerun replaced
        "skip_instance_cache": True,
    }


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``cmd`` in its own session (so a stuck one can be stopped with its children)."""
    with open(log, "wb") as fh:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (Dask workers then stop their Prefect temporary server too); after 20 s, kill
    the process group this test started for it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def wait_for(
    ready: Callable[[], bool], what: str, proc: subprocess.Popen, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{what} not ready after {timeout} s")


def http_up(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2):
        return True


def port_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def start_moto(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = start(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env, log
    )
    endpoint = f"http://127.0.0.1:{port}"
    wait_for(lambda: http_up(f"{endpoint}/moto-api/"), "moto server", proc)
    return proc, endpoint


def start_scheduler(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port)]
    proc = start([*cmd, "--no-dashboard"], env, log)
    wait_for(lambda: port_open(port), "dask scheduler", proc)
    return proc, f"tcp://127.0.0.1:{port}"


def start_worker(address: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    cmd = [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--nworkers", "1"]
    return start([*cmd, "--no-nanny", "--host", "127.0.0.1", "--no-dashboard"], env, log)


def wait_for_workers(address: str, n: int, procs: list[subprocess.Popen]) -> None:
    from distributed import Client

    with Client(address, timeout=30) as client:
        deadline = time.monotonic() + 60
        while len(client.scheduler_info()["workers"]) < n:
            dead = [p.pid for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"dask workers not up (exited: {dead})")
            time.sleep(0.3)


def start_prefect_server(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """One Prefect API for the flow runs and the workers. Without it every process (each flow
    run and each Dask worker) starts its own temporary server, ~10 s apiece on 2 cores."""
    port = free_port()
    cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--no-ui", "--no-services", "--analytics-off"]
    proc = start(cmd, env, log)
    api = f"http://127.0.0.1:{port}/api"
    wait_for(lambda: http_up(f"{api}/health"), "prefect server", proc, timeout=90)
    return proc, api
