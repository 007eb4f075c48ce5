"""The warm worker pool: isolation from crashes, hangs and memory hogs; fast dispatch."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.runtimes.jobs import Job, OutcomeKind
from modelyard.runtimes.local.pool import WorkerPool

pytestmark = pytest.mark.integration

T = "tests.runtimes.targets"


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    with WorkerPool(2, max_jobs_per_worker=50, stop_grace=1.0) as running:
        yield running


def test_jobs_run_in_other_processes_and_workers_are_reused(pool: WorkerPool) -> None:
    assert pool.run(Job(f"{T}:add", {"a": 2, "b": 3})).value == 5
    pids = {pool.run(Job(f"{T}:pid")).value for _ in range(20)}
    assert os.getpid() not in pids
    assert len(pids) <= 2
    assert pool.workers_started <= 2


def test_an_exception_is_a_user_failure_with_its_traceback(pool: WorkerPool) -> None:
    outcome = pool.run(Job(f"{T}:fail", {"message": "bad row 7"}))
    assert outcome.kind is OutcomeKind.RAISED
    assert outcome.error_type == "builtins.ValueError"
    assert outcome.error_message == "bad row 7"
    assert outcome.traceback is not None
    assert "raise ValueError(message)" in outcome.traceback
    assert pool.run(Job(f"{T}:add", {"a": 1, "b": 1})).value == 2


@pytest.mark.parametrize(
    ("target", "kwargs", "exit_code", "fragment"),
    [
        ("exit_hard", {"code": 7}, 7, "exited with code 7"),
        ("kill_self", {}, -9, "SIGKILL"),
    ],
)
def test_a_crashing_job_does_not_take_the_pool_down(
    pool: WorkerPool, target: str, kwargs: dict[str, int], exit_code: int, fragment: str
) -> None:
    outcome = pool.run(Job(f"{T}:{target}", kwargs))
    assert outcome.kind is OutcomeKind.CRASHED
    assert outcome.exit_code == exit_code
    assert outcome.error_message is not None
    assert fragment in outcome.error_message
    assert pool.run(Job(f"{T}:add", {"a": 20, "b": 22})).value == 42


def test_system_exit_in_user_code_is_a_failure_not_a_crash(pool: WorkerPool) -> None:
    outcome = pool.run(Job(f"{T}:system_exit"))
    assert outcome.kind is OutcomeKind.RAISED
    assert outcome.error_type == "builtins.SystemExit"


def test_a_hanging_job_is_stopped_at_its_timeout(pool: WorkerPool) -> None:
    started = time.monotonic()
    outcome = pool.run(Job(f"{T}:sleep", {"seconds": 30}, timeout=0.5))
    assert outcome.kind is OutcomeKind.TIMED_OUT
    assert time.monotonic() - started < 5
    stubborn = pool.run(Job(f"{T}:ignore_sigterm_and_sleep", {"seconds": 30}, timeout=0.3))
    assert stubborn.kind is OutcomeKind.TIMED_OUT  # SIGKILL after the grace period
    assert pool.run(Job(f"{T}:sleep", {"seconds": 0})).value == "woke"


def test_a_job_over_its_memory_limit_fails_cleanly(pool: WorkerPool) -> None:
    outcome = pool.run(Job(f"{T}:allocate", {"megabytes": 512}, memory_limit=64 * 2**20))
    assert outcome.kind is OutcomeKind.RAISED
    assert outcome.error_type == "builtins.MemoryError"
    assert outcome.error_message is not None
    assert "memory limit" in outcome.error_message
    fits = pool.run(Job(f"{T}:allocate", {"megabytes": 16}, memory_limit=256 * 2**20))
    assert fits.value == 16 * 2**20


def test_output_is_captured_per_job_even_from_child_processes(
    pool: WorkerPool, tmp_path: Path
) -> None:
    log = tmp_path / "attempt-1.log"
    assert pool.run(Job(f"{T}:talk", log_path=str(log))).value == "said"
    assert log.read_text().splitlines() == ["to stdout", "to stderr", "from a child process"]
    other = tmp_path / "attempt-2.log"
    pool.run(Job(f"{T}:add", {"a": 1, "b": 2}, log_path=str(other)))
    assert other.read_text() == ""


def test_environment_is_set_for_one_job_only(pool: WorkerPool) -> None:
    secret = Job(f"{T}:read_env", {"name": "DB_PASSWORD"}, env={"DB_PASSWORD": "hunter2"})
    assert pool.run(secret).value == "hunter2"
    after = [pool.run(Job(f"{T}:read_env", {"name": "DB_PASSWORD"})).value for _ in range(4)]
    assert after == [None] * 4


def test_a_result_that_cannot_be_sent_back_is_a_failure(pool: WorkerPool) -> None:
    outcome = pool.run(Job(f"{T}:unpicklable"))
    assert outcome.kind is OutcomeKind.RAISED
    assert outcome.error_message is not None
    assert "cannot be sent back" in outcome.error_message


def test_an_unknown_target_is_a_failure(pool: WorkerPool) -> None:
    outcome = pool.run(Job("tests.runtimes.targets:nope"))
    assert outcome.kind is OutcomeKind.RAISED
    assert outcome.error_type == "builtins.AttributeError"


def test_cancelling_a_running_job_stops_it(pool: WorkerPool) -> None:
    cancel = threading.Event()
    future = pool.submit(Job(f"{T}:sleep", {"seconds": 30}), cancel=cancel)
    time.sleep(0.3)
    cancel.set()
    outcome = future.result(timeout=10)
    assert outcome.kind is OutcomeKind.CANCELLED


def test_workers_are_recycled_after_n_jobs() -> None:
    with WorkerPool(1, max_jobs_per_worker=3) as pool:
        pids = [pool.run(Job(f"{T}:pid")).value for _ in range(7)]
    assert len(set(pids[0:3])) == 1
    assert len(set(pids)) == 3
    assert pool.workers_started == 3


def test_jobs_run_in_parallel_up_to_the_pool_size(pool: WorkerPool) -> None:
    started = time.monotonic()
    futures = [pool.submit(Job(f"{T}:sleep", {"seconds": 0.5})) for _ in range(4)]
    assert [f.result(timeout=10).value for f in futures] == ["woke"] * 4
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 3.0  # two at a time: two rounds of 0.5 s


def test_a_result_the_parent_cannot_unpickle_fails_the_job_not_the_pool(
    pool: WorkerPool, tmp_path: Path
) -> None:
    source = tmp_path / "shapes.py"
    source.write_text("class Square:\n    pass\n\ndef make():\n    return Square()\n")
    from modelyard.pipelines.loader import module_name_for

    target = f"{module_name_for(source)}:make"
    outcome = pool.submit(Job(target, import_path=(str(source),))).result(timeout=30)
    assert outcome.kind is OutcomeKind.RAISED
    assert outcome.error_message is not None
    assert "could not be read back" in outcome.error_message
    assert pool.run(Job(f"{T}:add", {"a": 2, "b": 2})).value == 4


def test_each_job_reports_its_own_peak_memory(pool: WorkerPool) -> None:
    big = pool.run(Job(f"{T}:allocate", {"megabytes": 300}))
    small = pool.run(Job(f"{T}:noop"))
    assert big.ok
    assert small.ok
    assert big.peak_memory_bytes is not None
    assert small.peak_memory_bytes is not None
    assert big.peak_memory_bytes >= 300 * 1024 * 1024
    # The high-water mark starts afresh for every job, even on a reused worker.
    assert small.peak_memory_bytes < big.peak_memory_bytes - 200 * 1024 * 1024


def test_workers_start_before_the_first_job_and_replacements_too() -> None:
    with WorkerPool(2, max_jobs_per_worker=1) as pool:
        deadline = time.monotonic() + 30
        while pool.workers_started < 2:
            assert time.monotonic() < deadline, "the workers did not start on their own"
            time.sleep(0.05)
        pool.run(Job(f"{T}:noop"))
        while pool.workers_started < 3:  # the retired worker's replacement, unasked
            assert time.monotonic() < deadline, "no replacement was started"
            time.sleep(0.05)
