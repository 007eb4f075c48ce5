"""Schedules and run creation over the API: validation before anything runs, pausing,
triggering, versions and the audit trail."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from modelyard.store.db import session_factory, transaction
from modelyard.store.models import PipelineRun, Pool, TaskRun
from tests.conftest import MakeProject, Platform

pytestmark = pytest.mark.integration


def pipeline(**options: Any) -> dict[str, Any]:
    """A pipeline spec as ``PipelineDefinition.spec()`` builds it, with a typed parameter."""
    return {
        "name": "daily",
        "source": "daily.py:daily",
        "params_schema": {
            "type": "object",
            "properties": {
                "rows": {"type": "integer", "default": 10},
                "region": {"type": "string"},
            },
            "required": ["region"],
            "additionalProperties": False,
        },
        "nodes": [
            {
                "id": "extract",
                "task": "daily:extract",
                "task_name": "extract",
                "options": options,
                "inputs": {"rows": {"kind": "param", "name": "rows"}},
            }
        ],
    }


def schedule_body(**schedule: Any) -> dict[str, Any]:
    return {
        "spec": pipeline(),
        "schedule": {"cron": "@daily", "params": {"region": "eu"}, **schedule},
    }


@pytest.fixture
def eddie(platform: Platform, make_project: MakeProject) -> str:
    token = platform.user("eddie")
    make_project("risk", {"eddie": "editor"})
    return token


def test_a_schedule_is_created_paused_and_reapplying_keeps_its_state(
    platform: Platform, eddie: str
) -> None:
    with platform.client(eddie) as client:
        created = client.put("/api/v1/projects/risk/schedules", json=schedule_body())
        assert created.status_code == 201, created.text
        body = created.json()
        assert (body["paused"], body["next_run_at"], body["params"]) == (
            True,
            None,
            {"rows": 10, "region": "eu"},
        )
        assert created.headers["ETag"] == f'"{body["version"]}"'
        unpaused = client.post("/api/v1/projects/risk/schedules/daily/unpause").json()
        assert unpaused["paused"] is False
        assert unpaused["next_run_at"] is not None
        again = client.put(
            "/api/v1/projects/risk/schedules",
            json=schedule_body(cron="0 6 * * *", timezone="Europe/Paris"),
        )
        assert again.status_code == 200
        assert (again.json()["paused"], again.json()["cron"]) == (False, "0 6 * * *")
        stale = client.put(
            "/api/v1/projects/risk/schedules",
            json=schedule_body(),
            headers={"If-Match": f'"{body["version"]}"'},
        )
        assert stale.status_code == 409
        assert stale.json()["error"]["code"] == "resource/version_conflict"
        patched = client.patch(
            "/api/v1/projects/risk/schedules/daily", json={"catchup": True, "max_active_runs": 3}
        ).json()
        assert (patched["catchup"], patched["max_active_runs"]) == (True, 3)
        listed = client.get("/api/v1/projects/risk/schedules").json()
        assert [s["pipeline"] for s in listed] == ["daily"]
        assert client.delete("/api/v1/projects/risk/schedules/daily").status_code == 204
        gone = client.get("/api/v1/projects/risk/schedules/daily")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "schedule/not_found"
    with platform.admin() as admin:
        events = admin.get("/api/v1/audit", params={"project": "risk"}).json()["items"]
    actions = [e["action"] for e in events if e["actor"] == "eddie"]
    assert actions[::-1] == [
        "schedule.create",
        "schedule.unpause",
        "schedule.update",
        "schedule.update",
        "schedule.delete",
    ]


@pytest.mark.parametrize(
    ("schedule", "field", "words"),
    [
        ({"cron": "every day"}, "cron", "not a cron expression"),
        ({"cron": "@fortnightly"}, "cron", "unknown preset"),
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown time zone"),
        ({"max_active_runs": 0}, "max_active_runs", "greater than or equal to 1"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_field(
    platform: Platform, eddie: str, schedule: dict[str, Any], field: str, words: str
) -> None:
    with platform.client(eddie) as client:
        response = client.put("/api/v1/projects/risk/schedules", json=schedule_body(**schedule))
    assert response.status_code == 422
    error = response.json()["error"]
    assert any(
        field in map(str, problem["loc"]) and words in problem["msg"]
        for problem in error["details"]["errors"]
    ), error


def test_parameters_and_pools_are_checked_before_a_schedule_or_run_exists(
    platform: Platform, eddie: str
) -> None:
    with platform.client(eddie) as client:
        wrong_type = client.put(
            "/api/v1/projects/risk/schedules",
            json=schedule_body(params={"region": "eu", "rows": "many"}),
        )
        missing = client.post("/api/v1/projects/risk/runs", json={"spec": pipeline()})
        unknown = client.post(
            "/api/v1/projects/risk/runs",
            json={"spec": pipeline(), "params": {"region": "eu", "colour": "red"}},
        )
        no_pool = client.post(
            "/api/v1/projects/risk/runs",
            json={"spec": pipeline(pool="warehouse"), "params": {"region": "eu"}},
        )
        no_secret = client.post(
            "/api/v1/projects/risk/runs",
            json={"spec": pipeline(secrets=["DB_PASSWORD"]), "params": {"region": "eu"}},
        )
        naive = client.post(
            "/api/v1/projects/risk/runs",
            json={"spec": pipeline(), "params": {"region": "eu"}, "logical_date": "2025-01-01"},
        )
    assert wrong_type.status_code == 422
    assert wrong_type.json()["error"]["code"] == "pipeline/invalid_params"
    assert wrong_type.json()["error"]["details"]["errors"][0]["loc"] == ["rows"]
    assert missing.json()["error"]["code"] == "pipeline/invalid_params"
    assert "'region' is a required property" in missing.json()["error"]["message"]
    assert "colour" in unknown.json()["error"]["message"]
    assert no_pool.json()["error"]["code"] == "pipeline/unknown_pool"
    assert no_secret.json()["error"]["code"] == "pipeline/missing_secret"
    assert naive.status_code == 422
    for response in (missing, unknown, no_pool, no_secret):
        assert response.status_code == 422, response.text
    with session_factory(platform.engine)() as session:
        assert session.scalars(select(PipelineRun)).all() == []


def test_runs_are_queued_for_the_executor_and_triggered_from_a_schedule(
    platform: Platform, eddie: str
) -> None:
    with transaction(session_factory(platform.engine)) as session:
        session.add(Pool(name="warehouse", slots=2))
    with platform.client(eddie) as client:
        created = client.post(
            "/api/v1/projects/risk/runs",
            json={
                "spec": pipeline(pool="warehouse"),
                "params": {"region": "eu"},
                "logical_date": "2025-01-01T00:00:00Z",
                "max_parallelism": 2,
            },
        )
        assert created.status_code == 201, created.text
        client.put("/api/v1/projects/risk/schedules", json=schedule_body()).raise_for_status()
        triggered = client.post(
            "/api/v1/projects/risk/schedules/daily/trigger",
            params={"logical_date": "2025-02-01T00:00:00+01:00"},
        )
        naive = client.post(
            "/api/v1/projects/risk/schedules/daily/trigger",
            params={"logical_date": "2025-02-01T00:00:00"},
        )
        retry_queued = client.post(f"/api/v1/projects/risk/runs/{created.json()['id']}/retry")
    run = created.json()
    assert (run["state"], run["params"], run["created_by"]) == (
        "queued",
        {"rows": 10, "region": "eu"},
        "eddie",
    )
    assert triggered.status_code == 201
    assert triggered.json()["logical_date"] == "2025-01-31T23:00:00Z"
    assert triggered.json()["schedule_id"] is not None
    assert naive.status_code == 422
    assert retry_queued.status_code == 409
    assert retry_queued.json()["error"]["code"] == "run/not_finished"
    with session_factory(platform.engine)() as session:
        stored = session.get(PipelineRun, run["id"])
        assert stored is not None
        assert (stored.owner, stored.max_parallelism) == (None, 2)
        task = session.scalars(select(TaskRun).where(TaskRun.run_id == run["id"])).one()
        assert (task.state, task.pool, task.pool_slots) == ("pending", "warehouse", 1)


def test_retrying_a_failed_run_queues_its_failed_tasks(platform: Platform, eddie: str) -> None:
    with platform.client(eddie) as client:
        run_id = client.post(
            "/api/v1/projects/risk/runs", json={"spec": pipeline(), "params": {"region": "eu"}}
        ).json()["id"]
    with transaction(session_factory(platform.engine)) as session:
        run = session.get(PipelineRun, run_id)
        assert run is not None
        run.state = "failed"
        task = session.scalars(select(TaskRun).where(TaskRun.run_id == run_id)).one()
        task.state, task.attempts = "failed", 3
    with platform.client(eddie) as client:
        retried = client.post(f"/api/v1/projects/risk/runs/{run_id}/retry").json()
        detail = client.get(f"/api/v1/projects/risk/runs/{run_id}").json()
    assert (retried["reset_tasks"], retried["run"]["state"]) == (1, "queued")
    assert [(t["state"], t["attempts"]) for t in detail["tasks"]] == [("pending", 0)]


def test_a_run_on_an_unknown_runtime_is_refused(platform: Platform, eddie: str) -> None:
    with platform.client(eddie) as client:
        response = client.post(
            "/api/v1/projects/risk/runs",
            json={"spec": pipeline(), "params": {"region": "eu"}, "runtime": "mars"},
        )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "runtime/unknown"
    assert error["message"] == "unknown runtime 'mars'; available: kubernetes, local, ray"
