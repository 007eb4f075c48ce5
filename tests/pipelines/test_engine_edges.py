"""Edges of the engine: its own failures, bad inputs found at run time, process trees."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path

import pytest

from modelyard.pipelines.engine import RunEngine
from modelyard.pipelines.errors import PipelineDefinitionError
from modelyard.runtimes.jobs import Job, Outcome
from modelyard.specs.runs import RunState
from modelyard.store.db import transaction
from modelyard.store.models import Pool
from tests.pipelines import flows
from tests.pipelines.conftest import Runner

pytestmark = pytest.mark.integration


class FailingRuntime:
    """A runtime that breaks on its n-th submission, as an engine bug or crash would."""

    name = "local"  # it stands in for the local pool it wraps
    supports_gpus = False
    supports_gang_scheduling = False

    def __init__(self, inner: object, fail_on: int) -> None:
        self.inner = inner
        self.fail_on = fail_on
        self.calls = 0

    def submit(self, job: Job, cancel: threading.Event | None = None) -> Future[Outcome]:
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("the engine broke here")
        return self.inner.submit(job, cancel)  # type: ignore[attr-defined,no-any-return]

    def close(self) -> None:
        return None


def test_an_engine_that_breaks_mid_map_resumes_and_finishes(runner: Runner) -> None:
    broken = RunEngine(
        runner.sessions,
        FailingRuntime(runner.engine.pool, fail_on=3),
        runner.store,
        runner.engine.settings,
    )
    run_id = broken.create_run(
        runner.project_id,
        flows.squares.spec("tests/pipelines/flows.py:squares"),
        flows.squares.validate_params({"trace_dir": str(runner.trace_dir), "n": 3}),
        max_parallelism=1,
    )
    with pytest.raises(RuntimeError, match="the engine broke here"):
        broken.execute(run_id)
    assert runner.engine.execute(run_id) is RunState.SUCCEEDED
    assert runner.value(run_id, "add_up") == 0 + 1 + 4


def test_a_map_over_something_that_is_not_a_list_fails_that_task(runner: Runner) -> None:
    run_id, state = runner.run(flows.bad_map_flow, trace_dir=str(runner.trace_dir))
    assert state is RunState.FAILED
    error = runner.tasks(run_id)["square"].error
    assert error is not None
    assert "needs a list" in error["message"]


def test_a_pool_too_small_for_a_task_is_refused_up_front(runner: Runner) -> None:
    with transaction(runner.sessions) as session:
        session.add(Pool(name="tiny", slots=2))
    with pytest.raises(PipelineDefinitionError) as raised:
        runner.start(flows.heavy_flow)
    assert raised.value.code == "pipeline/pool_too_small"


def test_tasks_that_read_their_context_are_cached_per_logical_date(runner: Runner) -> None:
    spec = flows.dated_flow.spec("tests/pipelines/flows.py:dated_flow")
    outputs = []
    for day in (
        datetime(2024, 1, 1, tzinfo=UTC),
        datetime(2024, 2, 1, tzinfo=UTC),
        datetime(2024, 1, 1, tzinfo=UTC),
    ):
        run_id = runner.engine.create_run(runner.project_id, spec, {}, logical_date=day)
        assert runner.engine.execute(run_id) is RunState.SUCCEEDED
        outputs.append((runner.value(run_id, "dated"), runner.states(run_id)["dated"]))
    assert outputs == [
        ("2024-01-01 00:00:00+00:00", "succeeded"),
        ("2024-02-01 00:00:00+00:00", "succeeded"),
        ("2024-01-01 00:00:00+00:00", "cached"),
    ]


def test_a_timeout_stops_the_processes_a_task_started(runner: Runner, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    _, state = runner.run(flows.spawning_flow, pid_file=str(pid_file))
    assert state is RunState.FAILED
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting for its parent to reap it counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
