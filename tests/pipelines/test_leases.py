"""Who drives a run: leases, the run executor of ``modelyard up``, and pools shared by
engines."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from modelyard.pipelines.engine import RunEngine
from modelyard.pipelines.executor import RunExecutor
from modelyard.pipelines.pipeline import PipelineDefinition
from modelyard.pipelines.runs import (
    NewRun,
    RunLeasedError,
    claim,
    claimable,
    create_run,
    new_owner,
    request_cancel,
)
from modelyard.specs.runs import AttemptState, RunState, TaskState
from modelyard.store.db import transaction
from modelyard.store.models import Pool, TaskAttempt, TaskRun
from tests.pipelines import flows
from tests.pipelines.conftest import Runner, on_every_runtime

pytestmark = pytest.mark.integration


def _queued(
    runner: Runner,
    definition: PipelineDefinition = flows.squares,
    new: NewRun = NewRun(),
    **params: object,
) -> str:
    """A run created as the API or the scheduler creates it: nobody holds it."""
    spec = definition.spec(f"tests/pipelines/flows.py:{definition.name}")
    values = definition.validate_params({"trace_dir": str(runner.trace_dir), **params})
    with transaction(runner.sessions) as session:
        return create_run(session, runner.project_id, spec, values, new).id


def _other_engine(runner: Runner) -> RunEngine:
    return RunEngine(runner.sessions, runner.engine.pool, runner.store, runner.engine.settings)


def test_a_run_another_live_engine_holds_is_refused_then_free_once_it_finishes(
    runner: Runner,
) -> None:
    run_id = runner.start(flows.squares, trace_dir=str(runner.trace_dir), n=2)
    assert runner.run_row(run_id).owner == runner.engine.owner
    with pytest.raises(RunLeasedError) as refused:
        _other_engine(runner).execute(run_id)
    assert refused.value.code == "run/leased"
    assert runner.engine.execute(run_id) is RunState.SUCCEEDED
    finished = runner.run_row(run_id)
    assert (finished.owner, finished.lease_until) == (None, None)


def test_a_run_whose_engine_process_died_is_taken_over_at_once(runner: Runner) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    host, _, token = new_owner().split(":")
    owner = f"{host}:{dead.stdout.strip()}:{token}"
    run_id = _queued(runner, new=NewRun(owner=owner, lease=timedelta(hours=1)))
    with runner.sessions() as session:
        assert run_id in claimable(session, 10)
    assert _other_engine(runner).execute(run_id) is RunState.SUCCEEDED


def test_a_lease_held_elsewhere_is_respected_until_it_lapses(runner: Runner) -> None:
    run_id = _queued(runner, new=NewRun(owner="elsewhere:1:abc", lease=timedelta(hours=1)))
    with runner.sessions() as session:
        assert run_id not in claimable(session, 10)
    assert not claim(runner.sessions, run_id, "me:2:def")
    lapsed = _queued(runner, new=NewRun(owner="elsewhere:1:abc", lease=timedelta(seconds=-1)))
    assert claim(runner.sessions, lapsed, "me:2:def")
    assert runner.run_row(lapsed).owner == "me:2:def"


def test_cancelling_a_run_nobody_drives_cancels_it_at_once(runner: Runner) -> None:
    run_id = _queued(runner)
    assert request_cancel(runner.sessions, run_id)
    assert runner.run_row(run_id).state == RunState.CANCELLED
    assert set(runner.states(run_id).values()) == {TaskState.CANCELLED}
    assert not request_cancel(runner.sessions, run_id)


def test_a_pool_limits_tasks_across_engines(runner: Runner) -> None:
    with transaction(runner.sessions) as session:
        session.add(Pool(name="warehouse", slots=1))
    engines = [runner.engine, _other_engine(runner)]
    run_ids = [
        engine.create_run(
            runner.project_id,
            flows.pooled_flow.spec("tests/pipelines/flows.py:pooled_flow"),
            flows.pooled_flow.validate_params({"trace_dir": str(runner.trace_dir)}),
        )
        for engine in engines
    ]
    states: list[RunState] = []
    threads = [
        threading.Thread(target=lambda e=e, r=r: states.append(e.execute(r)))
        for e, r in zip(engines, run_ids, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert states == [RunState.SUCCEEDED, RunState.SUCCEEDED]
    spans = []
    for label in "abc":
        starts = (runner.trace_dir / f"pooled-start-{label}.count").read_text().splitlines()
        ends = (runner.trace_dir / f"pooled-end-{label}.count").read_text().splitlines()
        spans += [
            (float(s.split()[1]), float(e.split()[1])) for s, e in zip(starts, ends, strict=True)
        ]
    spans.sort()
    assert len(spans) >= 3
    assert all(prev[1] <= nxt[0] for prev, nxt in itertools.pairwise(spans))


@on_every_runtime
def test_the_executor_runs_a_queued_runs_tasks_on_the_runtime_it_names(runner: Runner) -> None:
    spec = flows.where_flow.spec("tests/pipelines/flows.py:where_flow")
    with transaction(runner.sessions) as session:  # as the API creates it
        run_id = create_run(session, runner.project_id, spec, {}, NewRun(runtime=runner.runtime)).id
    executor = RunExecutor(runner.engine, capacity=1, poll_seconds=0.05)
    executor.start()
    try:
        deadline = time.monotonic() + 60
        while not RunState(runner.run_row(run_id).state).finished:
            assert time.monotonic() < deadline, "the executor did not drive the run"
            time.sleep(0.05)
    finally:
        executor.stop()
    assert runner.run_row(run_id).state == RunState.SUCCEEDED
    assert runner.value(run_id, "where") == runner.runtime


def test_the_executor_drives_queued_runs_and_hands_them_back_when_stopped(
    runner: Runner,
) -> None:
    quick = _queued(runner, n=2)
    slow = _queued(runner, flows.sleepy_flow, seconds=60.0)
    executor = RunExecutor(runner.engine, capacity=2, poll_seconds=0.05)
    executor.start()
    try:
        deadline = time.monotonic() + 30
        while (
            runner.run_row(quick).state != RunState.SUCCEEDED
            or not (runner.trace_dir / "sleepy.count").exists()
        ):
            assert time.monotonic() < deadline, "the executor did not drive the runs"
            time.sleep(0.05)
    finally:
        executor.stop()
    handed_back = runner.run_row(slow)
    assert handed_back.state == RunState.RUNNING
    assert handed_back.owner is None
    assert runner.states(slow) == {"sleepy": TaskState.QUEUED}
    with runner.sessions() as session:
        attempts = session.scalars(
            select(TaskAttempt.state)
            .join(TaskRun, TaskRun.id == TaskAttempt.task_run_id)
            .where(TaskRun.run_id == slow)
        ).all()
    assert attempts == [AttemptState.INTERRUPTED]

    successor = RunExecutor(_other_engine(runner), capacity=1, poll_seconds=0.05)
    assert successor.poll() == [slow]
    try:
        deadline = time.monotonic() + 30
        while len((runner.trace_dir / "sleepy.count").read_text().splitlines()) < 2:
            assert time.monotonic() < deadline, "the second executor did not resume the run"
            time.sleep(0.05)
        assert request_cancel(runner.sessions, slow)  # driven: its engine stops the task
        while runner.run_row(slow).state != RunState.CANCELLED:
            assert time.monotonic() < deadline, "the run was not cancelled"
            time.sleep(0.05)
    finally:
        successor.stop()
    assert runner.states(slow) == {"sleepy": TaskState.CANCELLED}
