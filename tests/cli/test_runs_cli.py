"""``modelyard run`` and ``modelyard runs`` on the embedded store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelyard.cli.main import main
from modelyard.errors import ExitCode

pytestmark = pytest.mark.integration

FLOW = """
import logging
from modelyard.pipelines.pipeline import pipeline
from modelyard.pipelines.task import task

@task
def items(n: int) -> list[int]:
    print("making", n, "items")
    logging.getLogger("flow").info("made %d items", n)
    logging.getLogger("flow").debug("not shown")
    return list(range(n))

@task
def total(values: list[int], fail: bool) -> int:
    if fail:
        raise ValueError("total refused")
    return sum(values)

@task(secrets=["WAREHOUSE_TOKEN"])
def needs_secret() -> None:
    return None

@pipeline
def flow(n: int = 3, fail: bool = False) -> None:
    total(items(n), fail)

@pipeline
def secretive() -> None:
    needs_secret()
"""


@pytest.fixture
def flow_file(tmp_path: Path) -> Path:
    path = tmp_path / "flow.py"
    path.write_text(FLOW)
    return path


def _json(capsys: pytest.CaptureFixture[str]) -> object:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_run_list_logs_and_a_cached_rerun(
    flow_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", f"{flow_file}:flow", "-P", "n=4", "--workers", "1"]
    assert main([*args, "-o", "json"]) == 0
    first = _json(capsys)
    assert isinstance(first, dict)
    assert first["state"] == "succeeded"
    assert main([*args]) == 0
    assert "succeeded" in capsys.readouterr().out
    assert main(["runs", "list", "-o", "json"]) == 0
    runs = _json_all(capsys)
    assert [r["state"] for r in runs] == ["succeeded", "succeeded"]
    assert main(["runs", "list", "-p", "nowhere", "-o", "json"]) != 0  # the project counts
    assert "project/not_found" in capsys.readouterr().err
    assert main(["runs", "logs", first["run_id"], "--task", "items"]) == 0
    logged = capsys.readouterr().out
    assert "making 4 items" in logged
    (line,) = [json.loads(x) for x in logged.splitlines() if x.startswith("{")]
    assert (line["message"], line["level"], line["name"]) == ("made 4 items", "INFO", "flow")
    assert (line["run_id"], line["task"], line["attempt"]) == (first["run_id"], "items", 1)
    assert "not shown" not in logged
    assert main(["runs", "show", runs[0]["id"]]) == 0
    assert "cached" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.usefixtures("ray_runtime")  # the session's Ray, which the run reuses
def test_run_on_ray_records_its_runtime_and_its_logs(
    flow_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sqlalchemy import select

    from modelyard.cli.runs import store_sessions
    from modelyard.config import Settings
    from modelyard.store.models import PipelineRun, TaskRun

    args = ["run", f"{flow_file}:flow", "-P", "n=5", "--runtime", "ray", "-o", "json"]
    assert main(args) == 0
    done = _json(capsys)
    assert isinstance(done, dict)
    assert done["state"] == "succeeded"
    with store_sessions(Settings()) as sessions, sessions() as session:
        run = session.get(PipelineRun, done["run_id"])
        assert run is not None
        assert run.runtime == "ray"
        total = session.scalar(
            select(TaskRun).where(TaskRun.run_id == run.id, TaskRun.node_id == "total")
        )
    assert total is not None
    assert total.output is not None
    assert main(["runs", "logs", done["run_id"], "--task", "items"]) == 0
    assert "making 5 items" in capsys.readouterr().out  # written by the Ray worker


def test_an_unknown_runtime_names_the_runtimes_there_are(
    flow_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", f"{flow_file}:flow", "--runtime", "mars"]) == ExitCode.USAGE
    error = capsys.readouterr().err
    assert "unknown runtime 'mars'" in error
    assert "local" in error
    assert "ray" in error


def _json_all(capsys: pytest.CaptureFixture[str]) -> list[dict[str, str]]:
    value = json.loads(capsys.readouterr().out)
    assert isinstance(value, list)
    return value


def test_a_failed_run_exits_1_and_retry_reruns_it(
    flow_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", f"{flow_file}:flow", "-P", "fail=true", "--workers", "1", "-o", "json"])
    assert code == 1
    failed = _json(capsys)
    assert isinstance(failed, dict)
    assert failed["state"] == "failed"
    assert main(["runs", "retry", failed["run_id"], "--workers", "1"]) == 1  # still failing
    assert "1 task(s) ran again" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["-P", "n=many"], "invalid parameters: n"),
        (["-P", "colour=red"], "colour"),
        (["-P", "novalue"], "is not key=value"),
        (["-p", "n=3"], "parameters are given with -P key=value"),
        (["--runtime", "mars"], "unknown runtime 'mars'; available: "),
    ],
)
def test_bad_parameters_are_usage_errors(
    flow_file: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    assert main(["run", f"{flow_file}:flow", *args]) == ExitCode.USAGE
    assert fragment in capsys.readouterr().err


def test_missing_secrets_and_broken_files_fail_before_anything_runs(
    flow_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", f"{flow_file}:secretive"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "needs secret(s) ['WAREHOUSE_TOKEN']" in err
    broken = tmp_path / "broken.py"
    broken.write_text("import nowhere_to_be_found\n")
    assert main(["run", f"{broken}:flow"]) == ExitCode.USAGE
    assert "ModuleNotFoundError" in capsys.readouterr().err
    assert main(["runs", "show", "no-such-run"]) == ExitCode.NOT_FOUND


SLOW = """
import time
from modelyard.pipelines.pipeline import pipeline
from modelyard.pipelines.task import task

@task
def ticker(n: int) -> int:
    for i in range(n):
        print(f"tick {i}", flush=True)
        time.sleep(0.3)
    return n

@pipeline
def slow(n: int = 6) -> None:
    ticker(n)
"""


def test_logs_follow_a_running_attempt_and_outlive_the_local_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os
    import shutil
    import subprocess
    import sys
    import time

    path = tmp_path / "slow.py"
    path.write_text(SLOW)
    modelyard = Path(sys.executable).with_name("modelyard")
    running = subprocess.Popen(
        [str(modelyard), "run", f"{path}:slow", "--no-watch", "--workers", "1"],
        env=dict(os.environ),
    )
    try:
        deadline = time.monotonic() + 30
        run_id = None
        while run_id is None:
            assert time.monotonic() < deadline
            listed_ok = main(["runs", "list", "-o", "json"]) == 0
            printed = capsys.readouterr().out
            if listed_ok:
                listed = json.loads(printed or "[]")
                run_id = listed[0]["id"] if listed else None
            time.sleep(0.1)
        assert main(["runs", "logs", run_id, "--follow"]) == 0
        followed = capsys.readouterr().out
        assert [f"tick {i}" in followed for i in range(6)] == [True] * 6
        assert running.wait(timeout=30) == 0
    finally:
        if running.poll() is None:
            running.kill()
    shutil.rmtree(Path(os.environ["MODELYARD_HOME"]) / "logs")
    assert main(["runs", "logs", run_id]) == 0
    assert "tick 5" in capsys.readouterr().out  # from the copy in the artifact store


def test_runs_on_a_store_that_was_never_initialised_is_a_clear_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["runs", "list"]) == ExitCode.SERVER_ERROR
    assert "run 'modelyard init'" in capsys.readouterr().err


DATED = """
from modelyard.pipelines.execute import current_context
from modelyard.pipelines.pipeline import pipeline
from modelyard.pipelines.task import task

@task
def stamp(fail_on: str) -> str:
    day = current_context().logical_date.date().isoformat()
    if day == fail_on:
        raise RuntimeError("no data for " + day)
    return day

@pipeline(schedule="@daily")
def dated(fail_on: str = "") -> None:
    stamp(fail_on)

@pipeline
def unscheduled() -> None:
    stamp("")
"""


def test_backfill_runs_each_interval_once_and_reruns_failures_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dated.py"
    path.write_text(DATED)
    window = ["--start", "2025-01-01", "--end", "2025-01-03", "--workers", "1"]
    args = ["backfill", f"{path}:dated", *window, "-o", "json"]
    assert main([*args, "-P", "fail_on=2025-01-02"]) == 1
    first = _json(capsys)
    assert isinstance(first, dict)
    assert [(r["logical_date"][:10], r["action"], r["state"]) for r in first["runs"]] == [
        ("2025-01-01", "created", "succeeded"),
        ("2025-01-02", "created", "failed"),
        ("2025-01-03", "created", "succeeded"),
    ]
    assert main(args) == 0  # every interval has a run: nothing runs again
    assert {r["action"] for r in _json(capsys)["runs"]} == {"skipped"}  # type: ignore[index]
    path.write_text(DATED.replace("raise RuntimeError", "print"))  # the fix
    assert main([*args, "--rerun-failed"]) == 0
    rerun = _json(capsys)
    assert isinstance(rerun, dict)
    assert [(r["action"], r["state"]) for r in rerun["runs"]] == [
        ("skipped", "-"),
        ("retried", "succeeded"),
        ("skipped", "-"),
    ]
    assert main(["runs", "list", "-o", "json"]) == 0
    listed = _json_all(capsys)
    assert sorted(r["logical_date"][:10] for r in listed) == [
        "2025-01-01",
        "2025-01-02",
        "2025-01-03",
    ]
    # The progress bar and the table, for people.
    assert main(["backfill", f"{path}:dated", "--start", "2025-01-04", "--end", "2025-01-05"]) == 0
    shown = capsys.readouterr().out
    assert "backfill dated" in shown
    assert "2/2" in shown


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--start", "2025-01-01", "--end", "2025-01-02"], "declares no schedule; give --cron"),
        (
            ["--start", "2025-01-05", "--end", "2025-01-01", "--cron", "@daily"],
            "--end is before --start",
        ),
        (["--start", "2025-01-01", "--end", "2025-01-02", "--cron", "@often"], "unknown preset"),
    ],
)
def test_bad_backfills_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str
) -> None:
    path = tmp_path / "dated.py"
    path.write_text(DATED)
    assert main(["backfill", f"{path}:unscheduled", *extra]) == ExitCode.USAGE
    assert fragment in capsys.readouterr().err


def test_drive_runs_a_queued_run_as_the_lease_holder_it_was_handed_to(
    flow_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelyard.cli.runs import project_id_for
    from modelyard.config import Settings
    from modelyard.pipelines.loader import load_pipeline
    from modelyard.pipelines.runs import NewRun, claim, create_run
    from modelyard.store.db import opened_engine, session_factory, transaction
    from modelyard.store.models import PipelineRun

    assert main(["run", f"{flow_file}:flow", "--workers", "1"]) == 0  # prepares the store
    target = f"{flow_file}:flow"
    with opened_engine(Settings().resolved_database_url) as store:
        sessions = session_factory(store)
        project_id = project_id_for(sessions, "default", create=False)
        with transaction(sessions) as session:
            spec = load_pipeline(target).spec(target)
            run_id = create_run(session, project_id, spec, {"n": 5, "fail": False}, NewRun()).id
        assert claim(sessions, run_id, "rayjob:elsewhere")  # as the controllers hand it over
        capsys.readouterr()
        assert main(["runs", "drive", run_id, "--workers", "1"]) == ExitCode.CONFLICT
        assert "being driven by another engine" in capsys.readouterr().err
        args = ["runs", "drive", run_id, "--owner", "rayjob:elsewhere", "--workers", "1"]
        assert main(args) == 0
        assert f"run {run_id}: succeeded" in capsys.readouterr().out
        with sessions() as session:
            run = session.get(PipelineRun, run_id)
            assert run is not None
            assert run.owner is None  # let go once driven
    assert main(["runs", "drive", "no-such-run"]) == ExitCode.NOT_FOUND
