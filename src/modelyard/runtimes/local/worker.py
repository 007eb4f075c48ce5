"""The worker side: a loop that runs jobs one at a time, isolated from the parent.

Each call gets its own stdout/stderr (redirected at the file-descriptor level, so
subprocesses and C extensions are captured too), its own environment variables and,
optionally, a memory limit; all are restored afterwards so the next job starts clean.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import resource
import sys
import time
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Connection

from modelyard.pipelines.loader import resolve_target
from modelyard.runtimes.jobs import Job, Outcome, OutcomeKind


@contextlib.contextmanager
def _redirected_output(log_path: str | None) -> Iterator[None]:
    if log_path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log_fd):
            os.close(fd)


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    previous = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _memory_limit(limit: int | None) -> Iterator[None]:
    if limit is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    in_use = _address_space_bytes()
    # The limit is for the task's own allocations, on top of what the warm worker holds.
    ceiling = in_use + limit
    if hard != resource.RLIM_INFINITY:
        ceiling = min(ceiling, hard)
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _reset_peak_memory() -> None:
    """Start the resident-memory high-water mark afresh, so it measures one job (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


def _peak_memory() -> int | None:
    """The resident-memory high-water mark since the last reset, in bytes."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


def run_job(job: Job) -> Outcome:
    """Run one job here and describe how it went (never raises for the user's errors)."""
    started = time.perf_counter()
    _reset_peak_memory()
    try:
        function = resolve_target(job.target, job.import_path)
        with (
            _environment(job.env),
            _redirected_output(job.log_path),
            _memory_limit(job.memory_limit),
        ):
            value = function(**job.kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # the user's code may raise anything, even SystemExit
        if isinstance(exc, MemoryError):
            message = "out of memory (the task's memory limit was reached)"
        else:
            message = str(exc)
        return Outcome(
            kind=OutcomeKind.RAISED,
            error_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
            error_message=message,
            traceback=traceback.format_exc(),
            seconds=time.perf_counter() - started,
            worker_pid=os.getpid(),
            peak_memory_bytes=_peak_memory(),
        )
    return Outcome(
        kind=OutcomeKind.SUCCEEDED,
        value=value,
        seconds=time.perf_counter() - started,
        worker_pid=os.getpid(),
        peak_memory_bytes=_peak_memory(),
    )


def serve(connection: Connection, preload: tuple[str, ...]) -> None:
    """The worker process's main loop: receive a job, run it, send the outcome."""
    for module in preload:
        importlib.import_module(module)
    connection.send("ready")
    while True:
        try:
            job = connection.recv()
        except EOFError:
            return
        if job is None:
            return
        outcome = run_job(job)
        try:
            connection.send(outcome)
        except Exception as exc:  # an unpicklable return value
            connection.send(
                Outcome(
                    kind=OutcomeKind.RAISED,
                    error_type=type(exc).__qualname__,
                    error_message=f"the task's return value cannot be sent back: {exc}",
                    seconds=outcome.seconds,
                    worker_pid=os.getpid(),
                )
            )


def main(argv: list[str]) -> None:
    """``python -m modelyard.runtimes.local.worker FD [PRELOAD ...]``."""
    serve(Connection(int(argv[0])), tuple(argv[1:]))


if __name__ == "__main__":
    main(sys.argv[1:])
