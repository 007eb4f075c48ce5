"""An engine killed mid-run continues where it stopped; a fixed task reruns alone."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from modelyard.pipelines.loader import load_pipeline
from modelyard.pipelines.runs import create_run
from modelyard.specs.runs import RunState, TaskState
from modelyard.store.db import transaction
from modelyard.store.models import TaskAttempt, TaskRun
from tests.pipelines.conftest import Runner

pytestmark = pytest.mark.integration

CHAIN = """
import time
from pathlib import Path
from modelyard.pipelines.pipeline import pipeline
from modelyard.pipelines.task import task

def mark(folder, name):
    with (Path(folder) / name).open("a") as f:
        f.write("x\\n")

@task
def first(folder: str) -> int:
    mark(folder, "first")
    return 1

@task
def second(value: int, folder: str, pause: float) -> int:
    mark(folder, "second")
    time.sleep(pause)
    {second_body}

@task
def third(value: int, folder: str) -> int:
    mark(folder, "third")
    return value * 10

@pipeline
def chain(folder: str, pause: float = 0.0) -> None:
    third(second(first(folder), folder, pause), folder)
"""

ENGINE_SCRIPT = """
import sys
from pathlib import Path
from modelyard.artifacts import ArtifactStore
from modelyard.pipelines.engine import EngineSettings, RunEngine
from modelyard.runtimes.local.pool import WorkerPool
from modelyard.store.db import create_store_engine, session_factory

url, artifacts, logs, run_id = sys.argv[1:5]
sessions = session_factory(create_store_engine(url))
with WorkerPool(1) as pool:
    engine = RunEngine(sessions, pool, ArtifactStore(artifacts),
                       EngineSettings(artifacts_url=artifacts, logs_dir=Path(logs)))
    engine.execute(run_id)
"""


_EDITS = itertools.count(1)


def _write(path: Path, second_body: str) -> None:
    path.write_text(CHAIN.replace("{second_body}", second_body))
    # A distinct modification time, however fast the edit follows the last one.
    stamp = time.time() + next(_EDITS)
    os.utime(path, (stamp, stamp))


def _count(folder: Path, name: str) -> int:
    path = folder / name
    return len(path.read_text().splitlines()) if path.exists() else 0


def _start(runner: Runner, path: Path, **params: object) -> str:
    """A queued run no engine holds yet (as the API creates them)."""
    definition = load_pipeline(f"{path}:chain")
    spec = definition.spec(f"{path}:chain")
    with transaction(runner.sessions) as session:
        run = create_run(session, runner.project_id, spec, definition.validate_params(params))
        return run.id


def test_a_killed_engine_resumes_without_repeating_finished_tasks(
    runner: Runner, tmp_path: Path
) -> None:
    pipeline_file = tmp_path / "chain.py"
    _write(pipeline_file, "return value + 1")
    folder = runner.trace_dir
    run_id = _start(runner, pipeline_file, folder=str(folder), pause=3.0)
    bind = runner.sessions.kw["bind"]
    url = bind.url.render_as_string(hide_password=False)
    engine_process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            ENGINE_SCRIPT,
            url,
            runner.store.url,
            str(tmp_path / "logs"),
            run_id,
        ],
    )
    try:
        deadline = time.monotonic() + 30
        # Killed once 'second' runs and its attempt is committed (the engine hands a task
        # to its worker just before committing the step that started it).
        while _count(folder, "second") == 0 or runner.states(run_id)["second"] != "running":
            assert time.monotonic() < deadline, "the engine never started 'second'"
            assert engine_process.poll() is None, "the engine exited early"
            time.sleep(0.05)
        engine_process.send_signal(signal.SIGKILL)
        engine_process.wait(timeout=10)
    finally:
        if engine_process.poll() is None:
            engine_process.kill()

    assert runner.states(run_id)["second"] == TaskState.RUNNING  # as the dead engine left it
    assert runner.engine.execute(run_id) is RunState.SUCCEEDED

    assert _count(folder, "first") == 1, "a finished task ran again"
    assert _count(folder, "third") == 1
    with runner.sessions() as session:
        second = session.scalars(select(TaskRun).where(TaskRun.node_id == "second")).one()
        attempts = session.scalars(
            select(TaskAttempt.state)
            .where(TaskAttempt.task_run_id == second.id)
            .order_by(TaskAttempt.number)
        ).all()
    assert attempts == ["interrupted", "succeeded"]
    assert runner.value(run_id, "third") == 20


def test_retry_after_a_fix_reruns_only_the_failed_task_and_what_follows(
    runner: Runner, tmp_path: Path
) -> None:
    pipeline_file = tmp_path / "chain.py"
    _write(pipeline_file, "raise RuntimeError('off by one')")
    folder = runner.trace_dir
    run_id = _start(runner, pipeline_file, folder=str(folder))
    assert runner.engine.execute(run_id) is RunState.FAILED
    assert runner.states(run_id) == {
        "first": "succeeded",
        "second": "failed",
        "third": "upstream_failed",
    }

    _write(pipeline_file, "return value + 1")
    assert runner.engine.retry(run_id) == 2
    assert runner.engine.execute(run_id) is RunState.SUCCEEDED

    assert _count(folder, "first") == 1
    assert _count(folder, "second") == 2
    assert _count(folder, "third") == 1
    assert runner.value(run_id, "third") == 20
