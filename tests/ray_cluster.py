"""One local Ray for the whole test session, shared by every test that runs on Ray."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psutil
import pytest

if TYPE_CHECKING:
    from modelyard.runtimes.ray.tasks import RayRuntime

RAY_CPUS = 2
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_runtime() -> Iterator[RayRuntime]:
    """The Ray runtime on a local Ray of ``RAY_CPUS`` CPUs, started once (a few seconds)
    and shut down at the end of the session; runtimes opened later reuse it."""
    pytest.importorskip("ray", reason="the Ray runtime needs 'modelyard[ray]'")
    from modelyard.runtimes.ray.tasks import RayRuntime

    with RayRuntime(num_cpus=RAY_CPUS, stop_grace=5.0) as runtime:
        yield runtime


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def ray_head() -> Iterator[tuple[str, int]]:
    """A second Ray, as a cluster's head with its dashboard (the job-submission API),
    in its own session and started once; token authentication off, as on a trusted
    single machine. Yields the dashboard's URL and the head's GCS port."""
    pytest.importorskip("ray.job_submission", reason="needs 'modelyard[ray]'")
    port, dashboard, agent, agent_grpc = free_port(), free_port(), free_port(), free_port()
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must be short
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            f"--dashboard-port={dashboard}",
            # Not Ray's fixed defaults: the session's own local Ray holds those.
            f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            "--include-dashboard=true",
            "--num-cpus=2",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/api/version", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert head.poll() is None, "the Ray head exited"
            assert time.monotonic() < deadline, "the Ray head's dashboard never answered"
            time.sleep(0.5)
        yield url, port
    finally:
        # The head's processes are its session's; none is left behind (by their folder).
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        for process in psutil.process_iter(["cmdline"]):
            if any(temp in part for part in process.info["cmdline"] or ()):
                process.kill()
        shutil.rmtree(temp, ignore_errors=True)
