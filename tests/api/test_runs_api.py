"""The runs API: a project's runs and their tasks, read by viewers, cancelled by editors."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from modelyard.store.db import session_factory, transaction
from modelyard.store.models import PipelineRun, Project, TaskRun
from tests.conftest import MakeProject, Platform

pytestmark = pytest.mark.integration

SPEC = {"name": "daily", "source": "x.py:daily", "params_schema": {}, "nodes": []}


def add_run(
    platform: Platform,
    project: str,
    *,
    state: str,
    run_id: str | None = None,
    pipeline: str = "daily",
) -> str:
    with transaction(session_factory(platform.engine)) as session:
        project_id = session.scalars(select(Project.id).where(Project.name == project)).one()
        run = PipelineRun(project_id=project_id, pipeline=pipeline, spec=SPEC, state=state)
        if run_id:
            run.id = run_id
        session.add(run)
        session.flush()
        session.add(TaskRun(run_id=run.id, node_id="extract", state="succeeded", attempts=1))
        session.add(TaskRun(run_id=run.id, node_id="load", state="running", attempts=2))
        return run.id


def test_viewers_read_runs_newest_first_with_their_tasks(
    platform: Platform, make_project: MakeProject
) -> None:
    token = platform.user("vera")
    make_project("risk", {"vera": "viewer"})
    older = add_run(platform, "risk", state="succeeded")
    newer = add_run(platform, "risk", state="running", pipeline="weekly")
    with platform.client(token) as vera:
        listed = vera.get("/api/v1/projects/risk/runs").json()
        only_daily = vera.get("/api/v1/projects/risk/runs", params={"pipeline": "daily"}).json()
        detail = vera.get(f"/api/v1/projects/risk/runs/{older}").json()
        missing = vera.get("/api/v1/projects/risk/runs/nope")
        refused = vera.post(f"/api/v1/projects/risk/runs/{newer}/cancel")
    assert [r["id"] for r in listed["items"]] == [newer, older]
    assert [r["id"] for r in only_daily["items"]] == [older]
    assert [(t["node_id"], t["state"], t["attempts"]) for t in detail["tasks"]] == [
        ("extract", "succeeded", 1),
        ("load", "running", 2),
    ]
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "run/not_found"
    assert refused.status_code == 403


def test_editors_cancel_running_runs_and_it_is_audited(
    platform: Platform, make_project: MakeProject
) -> None:
    token = platform.user("eddie")
    make_project("risk", {"eddie": "editor"})
    running = add_run(platform, "risk", state="running")
    done = add_run(platform, "risk", state="succeeded")
    with platform.client(token) as eddie:
        cancelled = eddie.post(f"/api/v1/projects/risk/runs/{running}/cancel")
        finished = eddie.post(f"/api/v1/projects/risk/runs/{done}/cancel")
    assert cancelled.status_code == 200
    with session_factory(platform.engine)() as session:
        assert session.get(PipelineRun, running).cancel_requested is True  # type: ignore[union-attr]
        assert session.get(PipelineRun, done).cancel_requested is False  # type: ignore[union-attr]
    assert finished.status_code == 200
    with platform.admin() as admin:
        events = admin.get("/api/v1/audit", params={"project": "risk"}).json()["items"]
    assert next((e["actor"], e["action"], e["resource_name"]) for e in events) == (
        "eddie",
        "run.cancel",
        running,
    )


def test_runs_of_another_project_are_closed(platform: Platform, make_project: MakeProject) -> None:
    token = platform.user("alice")
    make_project("a", {"alice": "admin"})
    make_project("b")
    theirs = add_run(platform, "b", state="running")
    with platform.client(token) as alice:
        for response in (
            alice.get("/api/v1/projects/b/runs"),
            alice.get(f"/api/v1/projects/b/runs/{theirs}"),
            alice.post(f"/api/v1/projects/b/runs/{theirs}/cancel"),
            alice.get(f"/api/v1/projects/a/runs/{theirs}"),  # right run, wrong project
        ):
            assert response.status_code in (403, 404), response.text
            assert (
                response.status_code == 403 or response.json()["error"]["code"] == "run/not_found"
            )


def test_attempts_and_their_logs_are_for_the_projects_viewers(
    platform: Platform, make_project: MakeProject
) -> None:
    viewer = platform.user("vera")
    outsider = platform.user("otto")
    make_project("risk", {"vera": "viewer"})
    make_project("other", {"otto": "admin"})
    run_id = add_run(platform, "risk", state="running")
    path = f"/api/v1/projects/risk/runs/{run_id}/attempts"
    with platform.client(viewer) as vera, platform.client(outsider) as otto:
        listed = vera.get(path)
        no_log = vera.get(f"{path}/nope/log")
        refused = otto.get(path)
        refused_log = otto.get(f"{path}/nope/log")
    assert listed.status_code == 200
    assert listed.json() == []
    assert no_log.status_code == 404
    assert (refused.status_code, refused_log.status_code) == (403, 403)
