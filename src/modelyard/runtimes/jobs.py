"""What the parent sends a worker, and what comes back."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from modelyard.specs.resources import Resources


@dataclass(frozen=True)
class Job:
    """One call of ``target`` (``"module:qualname"``) in a worker process.

    Args:
        target: The function to call.
        kwargs: Its keyword arguments (pickled to the worker: keep them small; large data
            travels through the artifact store, by reference).
        log_path: Where the call's stdout and stderr go (appended).
        env: Environment variables set for the call only (e.g. secrets).
        memory_limit: Address-space limit in bytes for the call (``RLIMIT_AS``).
        timeout: Seconds before the call is stopped (the worker is killed and replaced).
        import_path: Files to import before resolving ``target`` (pipeline files that
            are not importable modules).
        resources: What the call needs (a pod's requests and limits, a Ray task's).
        secret_env: Which of ``env``'s names hold secrets: a runtime with a secret store
            of its own (Kubernetes Secrets) references them there instead of copying
            their values into what it creates.
        image: The container image for runtimes that start containers (default: the
            runtime's own).
        labels: What the call is for (``project``, ``run``, ``task``, ``attempt``), so a
            runtime can name and label what it starts.
    """

    target: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    log_path: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    memory_limit: int | None = None
    timeout: float | None = None
    import_path: tuple[str, ...] = ()
    resources: Resources = field(default_factory=Resources)
    secret_env: tuple[str, ...] = ()
    image: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


class OutcomeKind(StrEnum):
    SUCCEEDED = "succeeded"
    RAISED = "raised"  # the user's code raised: a user failure
    CRASHED = "crashed"  # the worker process died (signal, os._exit, out of memory kill)
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    value: Any = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    exit_code: int | None = None
    seconds: float = 0.0
    worker_pid: int | None = None
    peak_memory_bytes: int | None = None  # the worker's resident peak during the job

    @property
    def ok(self) -> bool:
        return self.kind is OutcomeKind.SUCCEEDED
