"""Training jobs through the API: queued by editors, run by the job executor of
``modelyard up``, handed back when it stops, closed to other projects."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from modelyard.config import Settings
from modelyard.pipelines.local import secret_lookup
from modelyard.store.db import session_factory
from modelyard.training.executor import JobExecutor
from modelyard.training.tracking import TrackingConfig
from tests.conftest import MakeProject, Platform, start_platform

pytestmark = pytest.mark.integration

T = "tests.training.targets"


@pytest.fixture
def served(settings: Settings, engine: Engine) -> Iterator[Platform]:
    settings.executor_poll_seconds = 0.1
    server, platform = start_platform(settings, engine, controllers=True)
    yield platform
    server.stop()


def _wait(client: httpx.Client, path: str, states: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        job: dict[str, Any] = client.get(path).json()
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def test_a_job_is_queued_through_the_api_and_run_by_the_executor(served: Platform) -> None:
    eddie = served.user("eddie")
    vera = served.user("vera")
    with served.admin() as admin:
        admin.post("/api/v1/projects", json={"name": "ml"}).raise_for_status()
        for user, role in (("eddie", "editor"), ("vera", "viewer")):
            admin.post("/api/v1/projects/ml/members", json={"user": user, "role": role})
    spec = {"name": "reduce", "entrypoint": f"{T}:all_reduce", "workers": 2}
    with served.client(vera) as viewer:
        refused = viewer.post("/api/v1/projects/ml/jobs", json=spec)
    assert refused.status_code == 403
    with served.client(eddie) as client:
        created = client.post("/api/v1/projects/ml/jobs", json=spec)
        assert created.status_code == 201, created.text
        path = f"/api/v1/projects/ml/jobs/{created.json()['id']}"
        job = _wait(client, path, {"succeeded", "failed", "not_started"})
        log = client.get(f"{path}/logs", params={"attempt": 1, "rank": 1})
        listed = client.get("/api/v1/projects/ml/jobs").json()
    assert job["state"] == "succeeded", job
    assert job["result"]["sum"] == 3.0
    assert [(a["number"], a["outcome"]) for a in job["attempts"]] == [(1, "succeeded")]
    assert log.status_code == 200
    assert [j["id"] for j in listed] == [job["id"]]


@pytest.mark.parametrize(
    ("spec", "status", "code"),
    [
        ({"name": "x", "entrypoint": "nothing"}, 422, "request/invalid"),
        ({"name": "x", "entrypoint": "m:f", "secrets": ["NOPE"]}, 422, "job/missing_secret"),
        ({"name": "x", "entrypoint": "m:f", "workers": 0}, 422, "request/invalid"),
    ],
)
def test_bad_jobs_are_refused(
    platform: Platform, make_project: MakeProject, spec: dict[str, Any], status: int, code: str
) -> None:
    make_project("ml")
    with platform.admin() as admin:
        response = admin.post("/api/v1/projects/ml/jobs", json=spec)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_a_queued_job_is_cancelled_at_once_and_other_projects_see_nothing(
    platform: Platform, make_project: MakeProject
) -> None:
    make_project("ml")
    outsider = platform.user("otto")
    make_project("other", {"otto": "admin"})
    with platform.admin() as admin:
        job = admin.post(
            "/api/v1/projects/ml/jobs", json={"name": "x", "entrypoint": f"{T}:hang"}
        ).json()
        cancelled = admin.post(f"/api/v1/projects/ml/jobs/{job['id']}/cancel").json()
    assert (job["state"], cancelled["state"]) == ("queued", "cancelled")
    with platform.client(outsider) as otto:
        assert otto.get(f"/api/v1/projects/ml/jobs/{job['id']}").status_code == 403
        assert otto.get(f"/api/v1/projects/other/jobs/{job['id']}").status_code == 404


def test_stopping_the_executor_hands_a_running_job_back(
    platform: Platform, make_project: MakeProject, settings: Settings
) -> None:
    make_project("ml")
    with platform.admin() as admin:
        job = admin.post(
            "/api/v1/projects/ml/jobs",
            json={"name": "x", "entrypoint": f"{T}:hang", "params": {"seconds": 60}},
        ).json()
    sessions = session_factory(platform.engine)
    tracking_config = TrackingConfig.from_settings(settings)
    executor = JobExecutor(
        sessions,
        secret_lookup(settings, sessions),
        poll_seconds=0.1,
        tracking_config=tracking_config,
    )
    executor.start()
    path = f"/api/v1/projects/ml/jobs/{job['id']}"
    try:
        with platform.admin() as admin:
            _wait(admin, path, {"running"})
            time.sleep(0.5)
    finally:
        executor.stop()
    with platform.admin() as admin:
        handed_back = admin.get(path).json()
    assert handed_back["state"] == "queued"
    assert handed_back["reason"] == "queued again: the executor running it stopped"
    assert [a["outcome"] for a in handed_back["attempts"]] == ["cancelled"]
    run = tracking_config.client().get_run(handed_back["mlflow_run_id"])
    assert run.info.status == "RUNNING"  # to be resumed by the next executor...
    with platform.admin() as admin:
        assert admin.post(f"{path}/cancel").json()["state"] == "cancelled"
    run = tracking_config.client().get_run(handed_back["mlflow_run_id"])
    assert run.info.status == "KILLED"  # ...unless the job is cancelled in the queue


def test_a_job_whose_executor_died_is_queued_again_and_picked_up(
    platform: Platform, make_project: MakeProject, settings: Settings
) -> None:
    import subprocess
    import sys

    from modelyard.pipelines.runs import new_owner
    from modelyard.store.db import transaction
    from modelyard.store.models import TrainingJob

    make_project("ml")
    with platform.admin() as admin:
        job = admin.post(
            "/api/v1/projects/ml/jobs",
            json={"name": "x", "entrypoint": f"{T}:hang", "params": {"seconds": 60}},
        ).json()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    host, _, token = new_owner().split(":")
    sessions = session_factory(platform.engine)
    with transaction(sessions) as session:
        row = session.get(TrainingJob, job["id"])
        assert row is not None
        row.state, row.owner = "running", f"{host}:{dead}:{token}"
    executor = JobExecutor(sessions, secret_lookup(settings, sessions), poll_seconds=60)
    try:
        assert executor.poll() == [job["id"]]
        with sessions() as session:
            row = session.get(TrainingJob, job["id"])
            assert row is not None
            assert (row.state, row.owner) == ("running", executor.owner)
    finally:
        executor.stop()
