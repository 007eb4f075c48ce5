"""``modelyard up``'s controllers with the CLI against the server: runs queued through the
API and driven by the run executor, schedules applied from code and fired by the
scheduler, and controllers that hand their runs back when the server stops."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from modelyard.cli.main import main
from modelyard.config import Settings
from modelyard.specs.runs import RunState
from modelyard.store.db import session_factory
from modelyard.store.models import PipelineRun
from tests.conftest import Platform, start_platform

pytestmark = pytest.mark.integration

FLOW = """
import time
from modelyard.pipelines.execute import current_context
from modelyard.pipelines.pipeline import pipeline
from modelyard.pipelines.task import task

@task
def items(n: int) -> list[int]:
    print("making", n, "items")
    return list(range(n))

@task
def total(values: list[int], fail: bool) -> int:
    if fail:
        raise ValueError("total refused")
    return sum(values)

@task
def stamp() -> str:
    return str(current_context().logical_date)

@pipeline(schedule="@daily")
def flow(n: int = 3, fail: bool = False) -> None:
    total(items(n), fail)
    stamp()
"""


@pytest.fixture
def served(
    settings: Settings, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Platform]:
    settings.workers = 1
    settings.executor_poll_seconds = 0.1
    settings.scheduler_poll_seconds = 0.2
    server, platform = start_platform(settings, engine, controllers=True)
    with platform.admin() as admin:
        admin.post("/api/v1/projects", json={"name": "analytics"}).raise_for_status()
    monkeypatch.setenv("MODELYARD_URL", platform.url)
    monkeypatch.setenv("MODELYARD_TOKEN", platform.admin_token)
    (tmp_path / "flow.py").write_text(FLOW)
    yield platform
    server.stop()


def _json(capsys: pytest.CaptureFixture[str]) -> object:
    return json.loads(capsys.readouterr().out)


def _last_json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    value = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert isinstance(value, dict)
    return value


def _runs(platform: Platform) -> list[PipelineRun]:
    with session_factory(platform.engine)() as session:
        return list(session.scalars(select(PipelineRun).order_by(PipelineRun.logical_date)))


def test_run_against_a_server_is_driven_by_its_executor(
    served: Platform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"{tmp_path / 'flow.py'}:flow"
    assert main(["run", target, "-p", "analytics", "-P", "n=4", "-o", "json"]) == 0
    done = _last_json(capsys)
    assert done["state"] == "succeeded"
    run = _runs(served)[0]
    assert (run.created_by, run.owner) == ("admin", None)
    assert main(["runs", "list", "-p", "analytics", "-o", "json"]) == 0
    assert [r["id"] for r in _json(capsys)] == [done["run_id"]]  # type: ignore[union-attr]
    assert main(["runs", "show", str(done["run_id"]), "-p", "analytics"]) == 0
    assert "3/3 tasks finished" in capsys.readouterr().out
    assert main(["runs", "logs", str(done["run_id"]), "-p", "analytics", "--task", "items"]) == 0
    logs = capsys.readouterr().out
    assert "items · attempt 1" in logs
    assert "making 4 items" in logs
    with served.admin() as admin:
        attempts = admin.get(f"/api/v1/projects/analytics/runs/{done['run_id']}/attempts").json()
        missing = admin.get(f"/api/v1/projects/analytics/runs/{done['run_id']}/attempts/x/log")
    assert sorted(a["task"] for a in attempts) == ["items", "stamp", "total"]
    assert all(a["state"] == "succeeded" and a["peak_memory_bytes"] > 0 for a in attempts)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "attempt/not_found"

    assert main(["run", target, "-p", "analytics", "-P", "fail=true", "-o", "json"]) == 1
    failed = _last_json(capsys)
    assert failed["state"] == "failed"
    assert main(["runs", "retry", str(failed["run_id"]), "-p", "analytics"]) == 1
    assert "1 task(s) ran again; failed" in capsys.readouterr().out
    assert main(["run", target, "-p", "analytics", "--no-watch", "-o", "json"]) == 0
    queued = _last_json(capsys)
    assert queued["state"] == "queued"


@pytest.mark.slow
@pytest.mark.usefixtures("ray_runtime")  # the session's Ray, which the executor reuses
def test_a_run_queued_for_ray_is_driven_on_ray_by_the_executor(
    served: Platform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"{tmp_path / 'flow.py'}:flow"
    args = ["run", target, "-p", "analytics", "-P", "n=4", "--runtime", "ray", "-o", "json"]
    assert main(args) == 0
    done = _last_json(capsys)
    assert done["state"] == "succeeded"
    (run,) = _runs(served)
    assert run.runtime == "ray"
    assert main(["runs", "logs", str(done["run_id"]), "-p", "analytics", "--task", "items"]) == 0
    assert "making 4 items" in capsys.readouterr().out


def test_an_applied_schedule_fires_every_missed_interval_once(
    served: Platform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"{tmp_path / 'flow.py'}:flow"
    now = datetime.now(UTC)
    start = (now - timedelta(minutes=3)).replace(second=0, microsecond=0)
    apply = ["schedules", "apply", target, "-p", "analytics", "--cron", "* * * * *"]
    options = ["--start", start.isoformat(), "--catchup", "--max-active-runs", "1", "-o", "json"]
    assert main([*apply, *options, "-P", "n=2"]) == 0
    applied = _json(capsys)
    assert isinstance(applied, dict)
    assert (applied["paused"], applied["params"]) == (True, {"n": 2, "fail": False})
    time.sleep(0.5)
    assert _runs(served) == []  # paused: nothing fires

    assert main(["schedules", "unpause", "flow", "-p", "analytics", "-o", "json"]) == 0
    capsys.readouterr()
    deadline = time.monotonic() + 60
    while True:
        runs = _runs(served)
        finished = [r for r in runs if r.state == RunState.SUCCEEDED]
        if len(finished) >= 3:
            break
        assert time.monotonic() < deadline, [(r.logical_date, r.state) for r in runs]
        # max_active_runs=1: never two of the schedule's runs queued or running at once
        assert sum(not RunState(r.state).finished for r in runs) <= 1
        time.sleep(0.05)
    dates = [r.logical_date for r in runs if r.trigger == "schedule"]
    assert dates[:3] == [start + timedelta(minutes=i) for i in range(3)]
    assert len(set(dates)) == len(dates)

    assert main(["schedules", "pause", "flow", "-p", "analytics", "-o", "json"]) == 0
    capsys.readouterr()
    assert main(["schedules", "trigger", "flow", "-p", "analytics", "-o", "json"]) == 0
    triggered = _last_json(capsys)
    assert main(["schedules", "list", "-p", "analytics", "-o", "json"]) == 0
    listed = _json(capsys)
    assert isinstance(listed, dict)
    (only,) = listed["items"]
    assert only["paused"] is True
    assert only["last_logical_date"] is not None
    deadline = time.monotonic() + 30
    while next(r for r in _runs(served) if r.id == triggered["run_id"]).state != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_run_queued_on_a_server_without_controllers_says_why_it_waits(
    platform: Platform,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import threading

    from modelyard.cli import runs as runs_cli

    monkeypatch.setattr(runs_cli, "QUEUED_HINT_SECONDS", 0.3)
    with platform.admin() as admin:
        admin.post("/api/v1/projects", json={"name": "analytics"}).raise_for_status()
    monkeypatch.setenv("MODELYARD_URL", platform.url)
    monkeypatch.setenv("MODELYARD_TOKEN", platform.admin_token)
    (tmp_path / "flow.py").write_text(FLOW)

    def cancel_once_queued() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with platform.admin() as admin:
                runs = admin.get("/api/v1/projects/analytics/runs").json()["items"]
                if runs:
                    time.sleep(1.0)  # long enough for the hint
                    admin.post(f"/api/v1/projects/analytics/runs/{runs[0]['id']}/cancel")
                    return
            time.sleep(0.1)

    canceller = threading.Thread(target=cancel_once_queued)
    canceller.start()
    code = main(["run", f"{tmp_path / 'flow.py'}:flow", "-p", "analytics", "-o", "json"])
    canceller.join()
    assert code == 1
    captured = capsys.readouterr()
    assert "is still queued after" in captured.err
    assert "'modelyard server' has none" in captured.err
    assert _last_json_of(captured.out)["state"] == "cancelled"


def _last_json_of(out: str) -> dict[str, object]:
    value = json.loads(out.strip().splitlines()[-1])
    assert isinstance(value, dict)
    return value


def test_a_training_job_submitted_to_the_server_runs_there(
    served: Platform, capsys: pytest.CaptureFixture[str]
) -> None:
    target = "tests.training.targets:all_reduce"
    args = ["train", "submit", target, "--workers", "2", "-p", "analytics", "-o", "json"]
    assert main(args) == 0
    done = _last_json(capsys)
    assert (done["state"], done["attempts"]) == ("succeeded", 1)
    result = done["result"]
    assert isinstance(result, dict)
    assert result["sum"] == 3.0
    job_id = str(done["job_id"])
    assert main(["train", "list", "-p", "analytics", "-o", "json"]) == 0
    assert [j["id"] for j in json.loads(capsys.readouterr().out)["items"]] == [job_id]
    assert main(["train", "status", job_id, "-p", "analytics"]) == 0
    assert "every worker finished" in capsys.readouterr().out
    assert main(["train", "logs", job_id, "-p", "analytics", "--rank", "1"]) == 0
    assert "attempt-1 · rank-1" in capsys.readouterr().out
    assert main(["train", "logs", job_id, "-p", "analytics"]) == 0  # every rank, one client
    every = capsys.readouterr().out
    assert "attempt-1 · rank-0" in every
    assert "attempt-1 · rank-1" in every
    assert main(["train", "cancel", job_id, "-p", "analytics"]) == 0
    assert "has ended" in capsys.readouterr().out
