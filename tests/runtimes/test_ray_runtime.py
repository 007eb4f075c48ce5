"""The Ray runtime on a local Ray: outcomes as on the local runtime, Ray's failures mapped."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from modelyard.config import Settings
from modelyard.errors import InvalidInputError
from modelyard.runtimes import open_runtime
from modelyard.runtimes.jobs import Job, OutcomeKind
from modelyard.runtimes.ray import tasks
from modelyard.runtimes.ray.tasks import RayRuntime
from modelyard.specs.resources import Resources

pytestmark = pytest.mark.integration

T = "tests.runtimes.targets"
R = "tests.runtimes.ray_targets"


def _wait_for_line(log: Path, line: str) -> None:
    deadline = time.monotonic() + 30
    while not log.exists() or line not in log.read_text().splitlines():
        assert time.monotonic() < deadline, f"{line!r} never appeared in {log}"
        time.sleep(0.05)


def test_a_job_runs_in_a_ray_worker_and_returns_its_value(ray_runtime: RayRuntime) -> None:
    outcome = ray_runtime.run(Job(f"{T}:add", {"a": 2, "b": 3}))
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert outcome.value == 5
    assert outcome.worker_pid is not None
    assert outcome.worker_pid != os.getpid()


def test_an_exception_is_a_user_failure_with_its_traceback(ray_runtime: RayRuntime) -> None:
    outcome = ray_runtime.run(Job(f"{T}:fail", {"message": "bad row 7"}))
    assert outcome.kind is OutcomeKind.RAISED
    assert outcome.error_type == "builtins.ValueError"
    assert outcome.error_message == "bad row 7"
    assert outcome.traceback is not None
    assert "raise ValueError(message)" in outcome.traceback


@pytest.mark.parametrize(("target", "kwargs"), [("exit_hard", {"code": 3}), ("kill_self", {})])
def test_a_dying_worker_is_a_crash_described_as_ray_saw_it(
    ray_runtime: RayRuntime, target: str, kwargs: dict[str, int]
) -> None:
    outcome = ray_runtime.run(Job(f"{T}:{target}", kwargs))
    assert outcome.kind is OutcomeKind.CRASHED
    assert outcome.error_type == "WorkerCrashedError"
    assert outcome.error_message is not None
    assert "the Ray worker died while running the task" in outcome.error_message
    assert outcome.worker_pid is not None  # the worker it started on
    assert ray_runtime.run(Job(f"{T}:add", {"a": 20, "b": 22})).value == 42


def test_a_hanging_job_is_stopped_at_its_timeout(ray_runtime: RayRuntime) -> None:
    started = time.monotonic()
    outcome = ray_runtime.run(Job(f"{T}:sleep", {"seconds": 30}, timeout=0.5))
    assert outcome.kind is OutcomeKind.TIMED_OUT
    assert outcome.error_message == "stopped after its timeout of 0.5 s"
    assert time.monotonic() - started < 10
    assert ray_runtime.run(Job(f"{T}:sleep", {"seconds": 0})).value == "woke"


def test_a_timeout_counts_running_time_not_time_waiting_for_a_cpu(
    ray_runtime: RayRuntime, tmp_path: Path
) -> None:
    log = tmp_path / "blocker.log"
    blocker = ray_runtime.submit(
        Job(R + ":talk_and_sleep", {"seconds": 2.5}, log_path=str(log), resources=Resources(cpu=2))
    )
    _wait_for_line(log, "sleeping")  # it holds both CPUs now
    waiting = ray_runtime.submit(Job(f"{T}:sleep", {"seconds": 0.1}, timeout=1.0))
    time.sleep(1.2)
    assert not waiting.done()  # waiting for a CPU longer than its timeout, and not stopped
    assert blocker.result(timeout=30).ok
    outcome = waiting.result(timeout=30)
    assert outcome.kind is OutcomeKind.SUCCEEDED


def test_cancelling_a_running_job_stops_it(ray_runtime: RayRuntime, tmp_path: Path) -> None:
    cancel = threading.Event()
    log = tmp_path / "sleep.log"
    future = ray_runtime.submit(
        Job(R + ":talk_and_sleep", {"seconds": 30}, log_path=str(log)), cancel=cancel
    )
    _wait_for_line(log, "sleeping")
    cancel.set()
    outcome = future.result(timeout=15)
    assert outcome.kind is OutcomeKind.CANCELLED
    assert outcome.error_message == "cancelled"


def test_resources_are_asked_of_ray(ray_runtime: RayRuntime) -> None:
    two = ray_runtime.run(Job(R + ":assigned_resources", resources=Resources(cpu=2)))
    assert two.value == {"CPU": 2.0}
    default = ray_runtime.run(Job(R + ":assigned_resources"))
    assert default.value == {"CPU": 1.0}
    small = ray_runtime.run(
        Job(
            R + ":assigned_resources",
            resources=Resources(cpu="500m", memory="64Mi"),
        )
    )
    assert small.value == {"CPU": 0.5, "memory": 64 * 2**20}


def test_a_job_asking_more_than_the_cluster_has_waits_and_can_be_cancelled(
    ray_runtime: RayRuntime,
) -> None:
    cancel = threading.Event()
    future = ray_runtime.submit(Job(f"{T}:noop", resources=Resources(cpu=64)), cancel=cancel)
    time.sleep(1.0)
    assert not future.done()  # no node has 64 CPUs: Ray keeps it pending
    cancel.set()
    outcome = future.result(timeout=15)
    assert outcome.kind is OutcomeKind.CANCELLED


def test_a_job_over_its_memory_limit_fails_cleanly_and_the_worker_lives_on(
    ray_runtime: RayRuntime,
) -> None:
    hog = Job(f"{T}:allocate", {"megabytes": 512}, memory_limit=64 * 2**20)
    outcome = ray_runtime.run(hog)
    assert outcome.kind is OutcomeKind.RAISED
    assert outcome.error_type == "builtins.MemoryError"
    fits = ray_runtime.run(Job(f"{T}:allocate", {"megabytes": 16}, memory_limit=256 * 2**20))
    assert fits.value == 16 * 2**20
    assert ray_runtime.run(Job(f"{T}:add", {"a": 1, "b": 2})).value == 3


def test_output_and_environment_are_the_jobs_own(ray_runtime: RayRuntime, tmp_path: Path) -> None:
    log = tmp_path / "attempt" / "attempt-1.log"  # a folder the worker makes
    assert ray_runtime.run(Job(f"{T}:talk", log_path=str(log))).value == "said"
    assert log.read_text().splitlines() == ["to stdout", "to stderr", "from a child process"]
    secret = Job(f"{T}:read_env", {"name": "DB_PASSWORD"}, env={"DB_PASSWORD": "hunter2"})
    assert ray_runtime.run(secret).value == "hunter2"
    after = [ray_runtime.run(Job(f"{T}:read_env", {"name": "DB_PASSWORD"})).value for _ in range(3)]
    assert after == [None] * 3


def test_a_log_written_on_another_machine_comes_back_with_the_outcome(
    ray_runtime: RayRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The driver says it is elsewhere: the worker keeps the log in a folder of its own
    # and sends it back, as a node of a cluster must.
    monkeypatch.setattr(tasks.socket, "gethostname", lambda: "the-driver-machine")
    log = tmp_path / "engine-logs" / "attempt-1.log"
    log.parent.mkdir()
    assert ray_runtime.run(Job(f"{T}:talk", log_path=str(log))).value == "said"
    assert log.read_text().splitlines() == ["to stdout", "to stderr", "from a child process"]


def test_a_pipeline_file_is_imported_by_its_path(ray_runtime: RayRuntime, tmp_path: Path) -> None:
    from modelyard.pipelines.loader import module_name_for

    source = tmp_path / "numbers.py"
    source.write_text("def double(x):\n    return 2 * x\n")
    job = Job(f"{module_name_for(source)}:double", {"x": 21}, import_path=(str(source),))
    assert ray_runtime.run(job).value == 42


def test_a_result_the_driver_cannot_unpickle_fails_the_job_not_the_runtime(
    ray_runtime: RayRuntime, tmp_path: Path
) -> None:
    from modelyard.pipelines.loader import module_name_for

    source = tmp_path / "shapes.py"
    source.write_text("class Square:\n    pass\n\ndef make():\n    return Square()\n")
    job = Job(f"{module_name_for(source)}:make", import_path=(str(source),))
    outcome = ray_runtime.submit(job).result(timeout=30)
    assert outcome.kind is OutcomeKind.RAISED
    assert outcome.error_message is not None
    assert "could not be read back" in outcome.error_message
    assert ray_runtime.run(Job(f"{T}:add", {"a": 2, "b": 2})).value == 4


def test_jobs_run_in_parallel_on_the_clusters_cpus(ray_runtime: RayRuntime) -> None:
    futures = [ray_runtime.submit(Job(R + ":span", {"seconds": 1.0})) for _ in range(2)]
    (start_a, end_a), (start_b, end_b) = [f.result(timeout=30).value for f in futures]
    assert max(start_a, start_b) < min(end_a, end_b)  # both at once, on the two CPUs


def test_a_runtime_opened_from_settings_reuses_ray_and_leaves_it_running(
    ray_runtime: RayRuntime,
) -> None:
    import ray

    opened = open_runtime("ray", Settings())
    assert isinstance(opened, RayRuntime)
    assert not opened.started_ray
    future = opened.submit(Job(f"{T}:sleep", {"seconds": 0.3}))
    opened.close()  # waits for what it was given
    assert future.done()
    assert future.result().value == "woke"
    assert ray.is_initialized()
    assert ray_runtime.run(Job(f"{T}:add", {"a": 1, "b": 1})).value == 2


def test_without_ray_the_runtime_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "modelyard.runtimes.ray.tasks", None)
    with pytest.raises(InvalidInputError) as raised:
        open_runtime("ray", Settings())
    assert raised.value.code == "runtime/unavailable"
    assert "install 'modelyard[ray]'" in raised.value.message
