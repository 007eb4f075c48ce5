"""A pool of warm worker processes: millisecond dispatch with process isolation.

Workers are fresh interpreters running ``python -m modelyard.runtimes.local.worker``
(so the caller's ``__main__`` is never imported again, whatever it does at import),
started once and reused. One is replaced when it crashes, times out, fails a job or
reaches ``max_jobs_per_worker``. A crash, a hang or an out-of-memory kill in a job
never reaches the caller as anything but an ``Outcome``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from modelyard.runtimes.jobs import Job, Outcome, OutcomeKind

if TYPE_CHECKING:
    from modelyard.config import Settings

logger = logging.getLogger(__name__)

DEFAULT_PRELOAD = ("modelyard.runtimes.local.worker", "modelyard.pipelines.task")
# What every pipeline task attempt needs (pyarrow, pandas, the artifact store), imported
# before a worker's first job so that the first task pays no import.
PIPELINE_PRELOAD = (*DEFAULT_PRELOAD, "modelyard.pipelines.execute")
_START_TIMEOUT_S = 60.0
_STOP_GRACE_S = 5.0


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    connection: Connection
    job_limit: int
    jobs_done: int = 0

    def alive(self) -> bool:
        return self.process.poll() is None

    def join(self, timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)


@dataclass
class _Submission:
    job: Job
    future: Future[Outcome]
    cancel: threading.Event


class WorkerPool:
    """Runs ``Job``s on ``size`` warm worker processes (the local ``Runtime``).

    Args:
        size: How many jobs run at once.
        max_jobs_per_worker: Replace a worker after this many jobs (bounds leaks).
        preload: Modules each worker imports before its first job.
        stop_grace: Seconds between SIGTERM and SIGKILL when a job is stopped.
    """

    def __init__(
        self,
        size: int,
        *,
        max_jobs_per_worker: int = 2000,
        preload: Sequence[str] = DEFAULT_PRELOAD,
        stop_grace: float = _STOP_GRACE_S,
    ) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.name = "local"
        self.supports_gpus = False
        self.supports_gang_scheduling = False
        self.size = size
        self.max_jobs_per_worker = max_jobs_per_worker
        self.preload = tuple(preload)
        self.stop_grace = stop_grace
        self._queue: queue.Queue[_Submission | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.workers_started = 0
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, workers: int | None = None) -> WorkerPool:
        """A started pool of ``workers`` (else ``settings.workers``, else one per core)
        warm workers ready for pipeline tasks."""
        size = workers or settings.workers or max(1, os.cpu_count() or 1)
        return cls(size, preload=PIPELINE_PRELOAD).start()

    def start(self) -> WorkerPool:
        for index in range(self.size):
            thread = threading.Thread(
                target=self._drive, name=f"modelyard-worker-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def submit(self, job: Job, cancel: threading.Event | None = None) -> Future[Outcome]:
        """Queue ``job``; the future resolves to its ``Outcome`` (it never raises)."""
        if self._closed:
            raise RuntimeError("the worker pool is closed")
        future: Future[Outcome] = Future()
        self._queue.put(_Submission(job, future, cancel or threading.Event()))
        return future

    def run(self, job: Job) -> Outcome:
        return self.submit(job).result()

    def close(self) -> None:
        """Stop taking jobs, let queued ones finish, then stop the workers."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()

    # -- one driver thread per worker slot ---------------------------------------------

    def _warm(self) -> _Worker | None:
        """A new worker, started (and its imports done) before the job that needs it."""
        if self._closed:
            return None
        try:
            return self._spawn()
        except (OSError, RuntimeError) as exc:
            logger.warning("a worker process could not start (tried again with a job): %s", exc)
            return None

    def _drive(self) -> None:
        worker = self._warm()
        try:
            while True:
                submission = self._queue.get()
                if submission is None:
                    return
                if not submission.future.set_running_or_notify_cancel():
                    continue
                if worker is None or not worker.alive():
                    try:
                        worker = self._spawn()
                    except (OSError, RuntimeError) as exc:
                        logger.error("a worker process could not start: %s", exc)
                        submission.future.set_result(
                            Outcome(
                                kind=OutcomeKind.CRASHED,
                                error_message=f"a worker process could not start: {exc}",
                            )
                        )
                        worker = None
                        continue
                try:
                    outcome, healthy = self._execute(worker, submission)
                except Exception as exc:  # never leave a future unresolved
                    logger.exception("the worker pool failed running a job")
                    outcome = Outcome(kind=OutcomeKind.CRASHED, error_message=str(exc))
                    healthy = False
                worker.jobs_done += 1
                retire = not healthy or not outcome.ok
                if retire or worker.jobs_done >= worker.job_limit:
                    self._retire(worker, kill=not healthy)
                    worker = None
                submission.future.set_result(outcome)
                if worker is None:
                    worker = self._warm()
        finally:
            if worker is not None:
                self._retire(worker, kill=False)

    def _spawn(self) -> _Worker:
        parent_socket, child_socket = socket.socketpair()
        env = dict(os.environ)
        # The worker sees the modules this process can import, including added paths.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        try:
            process = subprocess.Popen(  # noqa: S603  (our own interpreter and module)
                [
                    sys.executable,
                    "-m",
                    "modelyard.runtimes.local.worker",
                    str(child_socket.fileno()),
                    *self.preload,
                ],
                pass_fds=[child_socket.fileno()],
                env=env,
                # Its own process group: stopping a job stops what the job started too.
                start_new_session=True,
            )
        finally:
            child_socket.close()
        connection = Connection(parent_socket.detach())
        if not connection.poll(_START_TIMEOUT_S) or connection.recv() != "ready":
            process.kill()
            process.wait()
            connection.close()
            raise RuntimeError("a worker process did not report ready")
        with self._lock:
            self.workers_started += 1
        # Up to a fifth fewer jobs at random, so workers started together are not all
        # replaced at the same moment (and the pool never stops taking jobs to do it).
        spread = random.randrange(self.max_jobs_per_worker // 5 + 1)  # noqa: S311
        return _Worker(process, connection, job_limit=max(1, self.max_jobs_per_worker - spread))

    def _execute(self, worker: _Worker, submission: _Submission) -> tuple[Outcome, bool]:
        """Send one job and wait for its outcome; returns (outcome, worker still usable)."""
        job = submission.job
        started = time.perf_counter()
        pid = worker.process.pid
        try:
            worker.connection.send(job)
        except (BrokenPipeError, OSError):
            return self._crashed(worker, started), False
        deadline = None if job.timeout is None else started + job.timeout
        while True:
            wait = 0.05
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.perf_counter()))
            try:
                ready = worker.connection.poll(wait)
            except (EOFError, OSError):
                return self._crashed(worker, started), False
            if ready:
                try:
                    return worker.connection.recv(), True
                except (EOFError, OSError):
                    return self._crashed(worker, started), False
                except Exception as exc:  # the result cannot be unpickled here
                    return Outcome(
                        kind=OutcomeKind.RAISED,
                        error_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
                        error_message=f"the task's result could not be read back: {exc}",
                        seconds=time.perf_counter() - started,
                        worker_pid=pid,
                    ), False
            if not worker.alive():
                return self._crashed(worker, started), False
            if submission.cancel.is_set():
                self._stop(worker)
                return Outcome(
                    kind=OutcomeKind.CANCELLED,
                    seconds=time.perf_counter() - started,
                    worker_pid=pid,
                    error_message="cancelled",
                ), False
            if deadline is not None and time.perf_counter() >= deadline:
                self._stop(worker)
                return Outcome(
                    kind=OutcomeKind.TIMED_OUT,
                    seconds=time.perf_counter() - started,
                    worker_pid=pid,
                    error_message=f"stopped after its timeout of {job.timeout:g} s",
                ), False

    def _crashed(self, worker: _Worker, started: float) -> Outcome:
        worker.join(timeout=self.stop_grace)
        code = worker.process.returncode
        return Outcome(
            kind=OutcomeKind.CRASHED,
            exit_code=code,
            error_message=_describe_exit(code),
            seconds=time.perf_counter() - started,
            worker_pid=worker.process.pid,
        )

    def _stop(self, worker: _Worker) -> None:
        """SIGTERM, then SIGKILL after the grace period."""
        if worker.alive():
            _signal_group(worker.process.pid, signal.SIGTERM)
            worker.join(timeout=self.stop_grace)
        _signal_group(worker.process.pid, signal.SIGKILL)  # and whatever it left behind
        if worker.alive():
            worker.process.kill()
        worker.process.wait()

    def _retire(self, worker: _Worker, *, kill: bool) -> None:
        if kill:
            self._stop(worker)
        else:
            with contextlib.suppress(BrokenPipeError, OSError):
                worker.connection.send(None)
            worker.join(timeout=self.stop_grace)
            if worker.alive():
                self._stop(worker)
        worker.connection.close()


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "the worker process vanished"
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (killed: often the out-of-memory killer)" if -code == signal.SIGKILL else ""
        return f"the worker process was killed by {name}{hint}"
    return f"the worker process exited with code {code}"


def outcome_summary(outcome: Outcome) -> dict[str, Any]:
    """A JSON-friendly description of an outcome, for logs and run records."""
    return {
        "kind": outcome.kind.value,
        "seconds": round(outcome.seconds, 6),
        "error_type": outcome.error_type,
        "error_message": outcome.error_message,
        "exit_code": outcome.exit_code,
    }
