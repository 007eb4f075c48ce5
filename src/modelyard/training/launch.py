"""Gangs of training workers on this machine: started together, stopped together, and
started again from the latest checkpoint when one fails and the failure policy says so.

Each worker gets the environment Kubeflow's PyTorchJob/TrainJob gives a pod and
``torchrun`` gives a process (``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``), so ``torch.distributed.init_process_group("gloo")``
and torchrun-style scripts run unchanged here and on a cluster.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from modelyard.specs.training import SIGNAL_EXIT_CODES, TrainingJobSpec

logger = logging.getLogger(__name__)

_POLL_S = 0.05
_STOP_GRACE_S = 5.0


class GangOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    NOT_STARTED = "not_started"  # not every worker could start: none ran


@dataclass(frozen=True)
class WorkerExit:
    rank: int
    exit_code: int | None
    error_type: str | None = None
    message: str | None = None


@dataclass
class GangAttempt:
    """One start of the whole gang."""

    number: int
    started_at: datetime
    finished_at: datetime | None = None
    outcome: GangOutcome | None = None
    reason: str = ""
    cause: WorkerExit | None = None  # the worker whose end decided the outcome
    exits: list[WorkerExit] = field(default_factory=list)
    retried: bool = False
    result: Any = None  # rank 0's return value (function entrypoints)


@dataclass
class JobResult:
    outcome: GangOutcome
    attempts: list[GangAttempt]
    reason: str = ""

    @property
    def result(self) -> Any:
        return self.attempts[-1].result if self.attempts else None


@contextlib.contextmanager
def cancel_on_sigterm() -> Iterator[threading.Event]:
    """An event set when this process gets SIGTERM, for the block: a task running a gang
    (a training job, a search) stops its workers, which live in sessions of their own,
    when its runtime stops it. Outside the main thread the event is simply never set."""
    cancel = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield cancel
        return
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: cancel.set())
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGTERM, previous)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def local_capacity() -> int:
    """How many single-CPU workers this machine can place."""
    return max(1, os.cpu_count() or 1)


class GangLauncher:
    """Runs one training job's gang on this machine until it succeeds or fails for good.

    Args:
        spec: The job.
        workdir: The job's folder: logs per attempt and rank, reports, checkpoints.
        env: Extra environment for every worker (e.g. secrets).
        cancel: Set to stop the job (SIGTERM, then SIGKILL after a grace period).
        on_attempt: Called after each attempt ends, with it (e.g. to record history).
    """

    place = "this machine"  # where the gang runs, as its messages name it

    def __init__(
        self,
        spec: TrainingJobSpec,
        workdir: Path,
        env: dict[str, str] | None = None,
        cancel: threading.Event | None = None,
        on_attempt: Callable[[GangAttempt], None] | None = None,
    ) -> None:
        self.spec = spec
        self.workdir = workdir
        self.env = env or {}
        self.cancel = cancel or threading.Event()
        self.on_attempt = on_attempt or (lambda _attempt: None)
        self.checkpoint_dir = Path(spec.checkpoint_dir or workdir / "checkpoints")

    def run(self) -> JobResult:
        """Start the gang, and again after retryable failures, up to the backoff limit."""
        cpus = float(self.spec.resources.cpu or 1.0)
        capacity = self.capacity()
        if self.spec.workers * cpus > capacity:
            attempt = GangAttempt(number=1, started_at=datetime.now(UTC))
            reason = (
                f"{self.spec.workers} workers of {cpus:g} CPU do not fit on {self.place} "
                f"({capacity:g} CPUs); none was started"
            )
            self._end(attempt, GangOutcome.NOT_STARTED, reason)
            self.on_attempt(attempt)
            return JobResult(GangOutcome.NOT_STARTED, [attempt], reason)
        deadline = (
            time.monotonic() + self.spec.timeout.total_seconds() if self.spec.timeout else None
        )
        policy = self.spec.failure_policy
        attempts: list[GangAttempt] = []
        while True:
            attempt = self._attempt(len(attempts) + 1, deadline)
            attempts.append(attempt)
            ended = self._decide(attempt, len(attempts), attempts)
            self.on_attempt(attempt)
            if ended is not None:
                return ended
            logger.info("job %s: restarting the gang (%s)", self.spec.name, attempt.reason)
            if self.cancel.wait(policy.backoff.total_seconds()):
                return JobResult(GangOutcome.CANCELLED, attempts, "cancelled")

    def capacity(self) -> float:
        """CPUs the gang's workers can be placed on."""
        return local_capacity()

    def _decide(
        self, attempt: GangAttempt, count: int, attempts: list[GangAttempt]
    ) -> JobResult | None:
        """The job's result if this attempt ends it; None (and the attempt marked as
        retried) if the gang starts again."""
        limit = self.spec.failure_policy.backoff_limit
        if attempt.outcome is not GangOutcome.FAILED:
            assert attempt.outcome is not None
            return JobResult(attempt.outcome, attempts, attempt.reason)
        if not self._retryable(attempt.cause):
            return JobResult(GangOutcome.FAILED, attempts, attempt.reason)
        if count > limit:
            return JobResult(
                GangOutcome.FAILED, attempts, f"{attempt.reason}; backoff limit of {limit} reached"
            )
        attempt.retried = True
        return None

    # -- one attempt ------------------------------------------------------------------

    def _attempt(self, number: int, deadline: float | None) -> GangAttempt:
        attempt = GangAttempt(number=number, started_at=datetime.now(UTC))
        folder = self.workdir / f"attempt-{number}"
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("rank-*.report.json"):  # a retried task's earlier attempt
            stale.unlink()
        port = free_port()
        processes: list[subprocess.Popen[bytes]] = []
        try:
            for rank in range(self.spec.workers):
                processes.append(self._start(rank, port, number, folder))
        except OSError as exc:
            self._stop(processes)
            self._end(attempt, GangOutcome.NOT_STARTED, f"a worker could not start: {exc}")
            return attempt
        outcome, reason, cause = self._watch(processes, folder, deadline)
        attempt.exits = [self._exit(rank, p, folder) for rank, p in enumerate(processes)]
        attempt.cause = cause and attempt.exits[cause.rank]
        if outcome is GangOutcome.SUCCEEDED:
            attempt.result = self._report(folder, 0).get("result")
        self._end(attempt, outcome, reason)
        return attempt

    def _command(self, folder: Path, rank: int) -> list[str]:
        if self.spec.is_script:
            return [sys.executable, self.spec.entrypoint, *self.spec.args]
        return [
            sys.executable,
            "-m",
            "modelyard.training.worker",
            self.spec.entrypoint,
            json.dumps(self.spec.params),
            str(folder / f"rank-{rank}.report.json"),
        ]

    def _threads(self) -> str:
        """Threads per worker for OpenMP and torch, as torchrun sets them: the worker's CPU
        share, so that a gang does not oversubscribe the machine's cores."""
        share = self.spec.resources.cpu or local_capacity() / self.spec.workers
        return str(max(1, int(share)))

    def _start(self, rank: int, port: int, number: int, folder: Path) -> subprocess.Popen[bytes]:
        env = {
            "OMP_NUM_THREADS": self._threads(),  # unless the job or this process sets it
            **os.environ,
            **self.spec.env,
            **self.env,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": str(self.spec.workers),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(self.spec.workers),
            "GROUP_RANK": "0",
            "MODELYARD_JOB": self.spec.name,
            "MODELYARD_RESTART_COUNT": str(number - 1),
            "MODELYARD_CHECKPOINT_DIR": str(self.checkpoint_dir),
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
            "PYTHONUNBUFFERED": "1",
        }
        with (folder / f"rank-{rank}.log").open("ab") as log:
            return subprocess.Popen(  # noqa: S603  (our interpreter, the job's entrypoint)
                self._command(folder, rank),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a process group: stopping it stops what it started
            )

    def _watch(
        self, processes: list[subprocess.Popen[bytes]], folder: Path, deadline: float | None
    ) -> tuple[GangOutcome, str, WorkerExit | None]:
        while True:
            codes = [p.poll() for p in processes]
            failed = [(rank, code) for rank, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                self._stop(processes)
                rank = root_cause(failed)
                exit_ = self._exit(rank, processes[rank], folder)
                return GangOutcome.FAILED, describe_exit(exit_), exit_
            if all(code == 0 for code in codes):
                return GangOutcome.SUCCEEDED, "every worker finished", None
            if self.cancel.is_set():
                self._stop(processes)
                return GangOutcome.CANCELLED, "cancelled", None
            if deadline is not None and time.monotonic() > deadline:
                self._stop(processes)
                limit = self.spec.timeout.total_seconds() if self.spec.timeout else 0
                return GangOutcome.TIMED_OUT, f"stopped after its timeout of {limit:g} s", None
            time.sleep(_POLL_S)

    def _stop(self, processes: list[subprocess.Popen[bytes]]) -> None:
        """SIGTERM every worker's process group, then SIGKILL what is left after a grace."""
        for process in processes:
            _signal_group(process, signal.SIGTERM)
        ends = time.monotonic() + _STOP_GRACE_S
        for process in processes:
            try:
                process.wait(timeout=max(0.0, ends - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()

    def _exit(self, rank: int, process: subprocess.Popen[bytes], folder: Path) -> WorkerExit:
        report = self._report(folder, rank)
        return WorkerExit(
            rank=rank,
            exit_code=process.returncode,
            error_type=report.get("error_type"),
            message=report.get("message"),
        )

    def _report(self, folder: Path, rank: int) -> dict[str, Any]:
        path = folder / f"rank-{rank}.report.json"
        try:
            value: dict[str, Any] = json.loads(path.read_text())
            return value
        except (OSError, ValueError):
            return {}

    def _retryable(self, cause: WorkerExit | None) -> bool:
        if cause is None:
            return False
        policy = self.spec.failure_policy
        if cause.error_type is not None:
            return any(
                cause.error_type == name or cause.error_type.endswith(f".{name}")
                for name in policy.retry_on_exceptions
            )
        return cause.exit_code in SIGNAL_EXIT_CODES or cause.exit_code in policy.retry_on_exit_codes

    def _end(self, attempt: GangAttempt, outcome: GangOutcome, reason: str) -> None:
        attempt.outcome = outcome
        attempt.reason = reason
        attempt.finished_at = datetime.now(UTC)


def root_cause(failed: Sequence[tuple[int, int | None]]) -> int:
    """The rank, of those that failed, that caused it: a worker killed by a signal comes
    first (its peers then fail because it is gone), else the lowest rank."""
    killed = [rank for rank, code in failed if code in SIGNAL_EXIT_CODES]
    return (killed or [rank for rank, _ in failed])[0]


def describe_exit(exit_: WorkerExit) -> str:
    code = exit_.exit_code
    if exit_.error_type:
        return f"rank {exit_.rank} raised {exit_.error_type}: {exit_.message}"
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"rank {exit_.rank} was killed by {name}{hint}"
    return f"rank {exit_.rank} exited with code {code}"


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
