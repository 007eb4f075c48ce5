"""A run submitted to a Ray cluster through Ray's job-submission API (what KubeRay's
RayJob does): `modelyard run ... --runtime ray` as the job's driver finds the cluster
through the RAY_ADDRESS Ray gives it, records the run in its store and runs the tasks on
that cluster's workers. The cluster is a separate Ray head started for this module."""

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

import httpx
import psutil
import pytest
from sqlalchemy import select

from modelyard.artifacts import ArtifactStore
from modelyard.config import Settings
from modelyard.specs.runs import RunState
from modelyard.store.db import opened_engine, session_factory
from modelyard.store.models import PipelineRun, TaskRun

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def ray_head() -> Iterator[tuple[str, int]]:
    """A Ray head with its dashboard (the job-submission API), in its own session; token
    authentication off, as on a trusted single machine."""
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


def test_a_run_submitted_as_a_ray_job_runs_its_tasks_on_that_cluster(
    ray_head: tuple[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    url, gcs_port = ray_head
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    home = tmp_path / "home"
    client = JobSubmissionClient(url)
    deadline = time.monotonic() + 180
    while True:  # the dashboard answers before the head's job agent has registered
        try:
            job = client.submit_job(
                entrypoint=(
                    f"{BIN / 'modelyard'} run tests/pipelines/flows.py:cluster_flow --runtime ray"
                ),
                runtime_env={"env_vars": {"MODELYARD_HOME": str(home)}},
            )
            break
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1)
    while not (status := client.get_job_status(job)).is_terminal():
        assert time.monotonic() < deadline, client.get_job_logs(job)[-2000:]
        time.sleep(0.5)
    assert status == JobStatus.SUCCEEDED, client.get_job_logs(job)[-2000:]
    settings = Settings(home=home)
    with (
        opened_engine(settings.resolved_database_url) as engine,
        session_factory(engine)() as session,
    ):
        run = session.scalars(select(PipelineRun)).one()
        task = session.scalars(select(TaskRun).where(TaskRun.run_id == run.id)).one()
    assert (run.state, run.runtime) == (RunState.SUCCEEDED, "ray")
    assert task.output is not None
    where = ArtifactStore(settings.resolved_artifacts_url).get_json(task.output["ref"]["digest"])
    assert where.endswith(f":{gcs_port}")  # a worker of the submitted-to cluster
