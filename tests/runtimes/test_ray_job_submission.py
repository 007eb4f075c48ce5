"""A run submitted to a Ray cluster through Ray's job-submission API (what KubeRay's
RayJob does): `modelyard run ... --runtime ray` as the job's driver finds the cluster
through the RAY_ADDRESS Ray gives it, records the run in its store and runs the tasks on
that cluster's workers. The cluster is the session's second Ray head (``ray_head``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from modelyard.artifacts import ArtifactStore
from modelyard.config import Settings
from modelyard.specs.runs import RunState
from modelyard.store.db import opened_engine, session_factory
from modelyard.store.models import PipelineRun, TaskRun

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent


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
