"""The Ray runtime: each job is one Ray task, run by the same code as a local worker.

A task calls :func:`modelyard.runtimes.local.worker.run_job` in a Ray worker process,
so a job's output, environment, memory limit and error reporting are what they are on
the local runtime; Ray only decides where it runs. The task is a streaming generator
that first reports its worker's pid, then its ``Outcome``: the first item says the job
has started, so a job's timeout counts its running time only, never the time it waited
for a free CPU on a busy cluster.

Where Ray runs:

* no address: the cluster ``RAY_ADDRESS`` names (as in a RayJob's submitter), else a
  local Ray started here (``num_cpus`` = this machine's cores, no dashboard) and shut
  down by :meth:`RayRuntime.close`;
* ``auto`` or ``host:port``: an existing cluster this machine is part of;
* ``ray://host:10001``: a remote cluster through Ray Client.

A remote cluster's workers need what a local worker has: modelyard and the task's code
installed at the same paths (the same image: pipeline files are imported by their path),
and the artifact store reachable from every node (S3 or GCS, not a local folder). Each
attempt's log is written where the engine keeps it: directly on the driver's machine,
else on the node and sent back with the outcome (its last 8 MiB).
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
import ray.exceptions

from modelyard.runtimes.jobs import Job, Outcome, OutcomeKind
from modelyard.runtimes.local.worker import run_job
from modelyard.runtimes.ray.connect import connect

if TYPE_CHECKING:
    from modelyard.config import Settings

logger = logging.getLogger(__name__)

_POLL_SECONDS = 0.05
_STOP_GRACE_S = 10.0


_LOG_LIMIT = 8 * 2**20  # of an attempt's log sent back from another machine


def _execute(job: Job, driver_host: str) -> Iterator[Any]:
    """The Ray task: announces its start (its pid), then runs the job and returns its
    outcome with, when it ran on another machine than the driver, its log's text (the
    engine's log folder is not there)."""
    yield os.getpid()
    if not job.log_path or socket.gethostname() == driver_host:
        if job.log_path:  # the engine's folder, made on this same machine
            os.makedirs(os.path.dirname(job.log_path) or ".", exist_ok=True)
        yield run_job(job), None
        return
    with tempfile.TemporaryDirectory(prefix="modelyard-attempt-") as folder:
        log = Path(folder) / "attempt.log"
        outcome = run_job(replace(job, log_path=str(log)))
        with log.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - _LOG_LIMIT))
            text = handle.read().decode(errors="replace")
        if size > _LOG_LIMIT:
            text = (
                f"[the first {size - _LOG_LIMIT} bytes of this log were left on the node]\n" + text
            )
        yield outcome, text


@dataclass(eq=False)  # each is itself, whatever its fields
class _Submission:
    job: Job
    future: Future[Outcome]
    cancel: threading.Event
    tasks: ray.ObjectRefGenerator[Any]
    started: float | None = None  # when the task reported it runs
    pid: int | None = None
    stopping: Outcome | None = None  # why it is being stopped
    stop_deadline: float = 0.0


class RayRuntime:
    """Runs ``Job``s as Ray tasks (the ``ray`` ``Runtime``).

    Each task asks Ray for ``job.resources``: ``num_cpus`` (default 1), ``num_gpus``
    and ``memory`` (when set); Ray never retries it (retries are the engine's).

    Args:
        address: Ray's address (see the module's docstring); None: ``RAY_ADDRESS``, else
            a local Ray. A Ray already initialised in this process is used as it is.
        num_cpus: CPUs of a local Ray started here (default: this machine's cores).
        poll_seconds: How often cancellations and timeouts are checked.
        stop_grace: Seconds to wait for Ray to confirm a stopped task before its future
            is resolved anyway.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        poll_seconds: float = _POLL_SECONDS,
        stop_grace: float = _STOP_GRACE_S,
    ) -> None:
        self.name = "ray"
        self.supports_gpus = True
        self.supports_gang_scheduling = False
        self.poll_seconds = poll_seconds
        self.stop_grace = stop_grace
        self.started_ray = connect(address, num_cpus)
        self._task = ray.remote(num_returns="streaming", max_retries=0, retry_exceptions=False)(
            _execute
        )
        self._submissions: list[_Submission] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._watch, name="modelyard-ray", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Settings, workers: int | None = None) -> RayRuntime:
        """The runtime ``settings.ray_address`` names; a local Ray gets every core
        (``workers``, the local pool's size, does not apply: Ray schedules by resources)."""
        del workers
        return cls(settings.ray_address)

    def submit(self, job: Job, cancel: threading.Event | None = None) -> Future[Outcome]:
        """Start ``job`` as a Ray task; the future resolves to its ``Outcome``."""
        if self._closed:
            raise RuntimeError("the Ray runtime is closed")
        future: Future[Outcome] = Future()
        future.set_running_or_notify_cancel()
        if not ray.is_initialized():  # shut down under us: never start a new Ray silently
            future.set_result(
                Outcome(kind=OutcomeKind.CRASHED, error_message="Ray was shut down in this process")
            )
            return future
        resources = job.resources
        options: dict[str, Any] = {
            "num_cpus": resources.cpu if resources.cpu is not None else 1,
            "name": _task_name(job),
        }
        if resources.gpu:
            options["num_gpus"] = resources.gpu
        if resources.memory is not None:
            options["memory"] = resources.memory
        tasks = self._task.options(**options).remote(job, socket.gethostname())
        with self._lock:
            self._submissions.append(_Submission(job, future, cancel or threading.Event(), tasks))
        self._wake.set()
        return future

    def run(self, job: Job) -> Outcome:
        return self.submit(job).result()

    def close(self) -> None:
        """Wait for the submitted jobs, then shut Ray down if this runtime started it."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join()
        if self.started_ray and ray.is_initialized():
            ray.shutdown()

    def __enter__(self) -> RayRuntime:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- one thread watches every task ----------------------------------------------------

    def _watch(self) -> None:
        while True:
            with self._lock:
                watched = list(self._submissions)
            if not watched:
                if self._closed:
                    return
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
                continue
            try:
                self._check(watched)
            except Exception as exc:  # never leave a future unresolved
                logger.exception("the Ray runtime failed watching its tasks")
                for submission in watched:
                    self._resolve(
                        submission,
                        Outcome(kind=OutcomeKind.CRASHED, error_message=f"Ray failed: {exc}"),
                    )

    def _check(self, watched: list[_Submission]) -> None:
        generators = [submission.tasks for submission in watched]
        ready, _ = ray.wait(generators, num_returns=1, timeout=self.poll_seconds)
        if ready:  # and whatever else is ready by now
            ready, _ = ray.wait(generators, num_returns=len(generators), timeout=0)
        done = {id(generator) for generator in ready}
        now = time.perf_counter()
        for submission in watched:
            if id(submission.tasks) in done:
                self._advance(submission)
            elif submission.stopping is not None:
                if now >= submission.stop_deadline:
                    logger.warning("Ray did not confirm that a stopped task ended")
                    self._resolve(submission, submission.stopping)
            elif submission.cancel.is_set():
                self._stop(submission, OutcomeKind.CANCELLED, "cancelled")
            elif self._overdue(submission, now):
                self._stop(
                    submission,
                    OutcomeKind.TIMED_OUT,
                    f"stopped after its timeout of {submission.job.timeout:g} s",
                )

    def _overdue(self, submission: _Submission, now: float) -> bool:
        timeout = submission.job.timeout
        return (
            timeout is not None
            and submission.started is not None
            and now - submission.started >= timeout
        )

    def _advance(self, submission: _Submission) -> None:
        """The task's next item: its start, its outcome, or how Ray saw it fail."""
        try:
            value = ray.get(next(submission.tasks))
        except StopIteration:
            outcome = self._failed(submission, None)
        except ray.exceptions.RaySystemError as exc:
            unreadable = isinstance(exc.client_exc, Exception) and submission.started is not None
            outcome = (
                self._unreadable(submission, exc.client_exc)
                if unreadable
                else self._failed(submission, exc)
            )
        except ray.exceptions.RayError as exc:
            outcome = self._failed(submission, exc)
        except Exception as exc:
            outcome = self._unreadable(submission, exc)
        else:
            if submission.started is None:
                submission.started = time.perf_counter()
                submission.pid = value
                return
            outcome, log = value if isinstance(value, tuple) else (value, None)
            if not isinstance(outcome, Outcome):
                outcome = self._failed(submission, None)
            elif log is not None and submission.job.log_path:
                path = Path(submission.job.log_path)
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a") as handle:
                    handle.write(log)
        if submission.stopping is not None and not outcome.ok:
            outcome = submission.stopping  # what Ray reports of a task it killed for us
        self._resolve(submission, outcome)

    def _unreadable(self, submission: _Submission, exc: Exception) -> Outcome:
        """The job ended, but its outcome cannot be unpickled here (e.g. an object of a
        class the driver cannot import)."""
        return Outcome(
            kind=OutcomeKind.RAISED,
            error_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
            error_message=f"the task's result could not be read back: {exc}",
            worker_pid=submission.pid,
        )

    def _failed(self, submission: _Submission, error: Exception | None) -> Outcome:
        seconds = time.perf_counter() - submission.started if submission.started else 0.0
        if isinstance(error, ray.exceptions.RayTaskError):
            # Only the wrapper's own failures get here: run_job reports the user's.
            cause = error.cause
            return Outcome(
                kind=OutcomeKind.RAISED,
                error_type=f"{type(cause).__module__}.{type(cause).__qualname__}",
                error_message=str(cause),
                traceback=str(error),
                seconds=seconds,
                worker_pid=submission.pid,
            )
        if isinstance(error, ray.exceptions.TaskCancelledError):
            return Outcome(
                kind=OutcomeKind.CANCELLED,
                error_message="cancelled by Ray (not by modelyard)",
                seconds=seconds,
                worker_pid=submission.pid,
            )
        return Outcome(
            kind=OutcomeKind.CRASHED,
            error_type=type(error).__name__ if error is not None else None,
            error_message=describe_ray_failure(error),
            seconds=seconds,
            worker_pid=submission.pid,
        )

    def _stop(self, submission: _Submission, kind: OutcomeKind, message: str) -> None:
        started = submission.started
        submission.stopping = Outcome(
            kind=kind,
            error_message=message,
            seconds=time.perf_counter() - started if started else 0.0,
            worker_pid=submission.pid,
        )
        submission.stop_deadline = time.perf_counter() + self.stop_grace
        try:
            ray.cancel(submission.tasks, force=True)
        except Exception:  # already finished, or Ray is gone: the task is not running
            logger.debug("cancelling a Ray task failed", exc_info=True)
            self._resolve(submission, submission.stopping)

    def _resolve(self, submission: _Submission, outcome: Outcome) -> None:
        with self._lock:
            if submission not in self._submissions:
                return
            self._submissions.remove(submission)
        submission.future.set_result(outcome)


def describe_ray_failure(error: Exception | None) -> str:
    """What Ray reported about a task that did not finish, in a sentence."""
    if error is None:
        return "the Ray task returned no outcome"
    detail = str(error).strip().splitlines()
    said = f": {detail[0]}" if detail else ""
    if isinstance(error, ray.exceptions.OutOfMemoryError):
        return f"Ray killed the worker for using too much memory (OutOfMemoryError){said}"
    if isinstance(error, ray.exceptions.WorkerCrashedError):
        return f"the Ray worker died while running the task (WorkerCrashedError){said}"
    if isinstance(error, ray.exceptions.NodeDiedError | ray.exceptions.LocalRayletDiedError):
        return f"the Ray node running the task died ({type(error).__name__}){said}"
    return f"Ray could not run the task ({type(error).__name__}){said}"


def _task_name(job: Job) -> str:
    """What Ray's dashboard and state API show for the task."""
    labels = job.labels
    if "run" in labels and "task" in labels:
        return f"{labels['task']} ({labels['run']}, attempt {labels.get('attempt', '1')})"
    return job.target
