"""Where work runs: one small interface, one folder per backend.

The engine hands a runtime ``Job``s (always the same entrypoint, built by the engine) and
gets ``Outcome``s back; optional abilities are flags, never type checks.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Protocol

from modelyard.errors import InvalidInputError
from modelyard.runtimes.jobs import Job, Outcome, OutcomeKind


class Runtime(Protocol):
    """Runs jobs somewhere: warm local processes, pods, Ray workers."""

    name: str
    supports_gpus: bool
    supports_gang_scheduling: bool

    def submit(self, job: Job, cancel: threading.Event | None = None) -> Future[Outcome]:
        """Start ``job``; the future resolves to its outcome and never raises."""
        ...

    def close(self) -> None:
        """Finish what was submitted and release the runtime's resources."""
        ...


# Backends by name, as "module:class", imported only when used so that optional
# dependencies stay optional. Kubernetes and Ray join this registry with their backends.
RUNTIMES: dict[str, str] = {"local": "modelyard.runtimes.local.pool:WorkerPool"}


def check_runtime(name: str) -> str:
    """``name`` if a runtime of that name is registered.

    Raises:
        InvalidInputError: no such runtime; the message lists those there are.
    """
    if name not in RUNTIMES:
        raise InvalidInputError(
            f"unknown runtime {name!r}; available: {', '.join(sorted(RUNTIMES))}",
            code="runtime/unknown",
            details={"runtime": name},
        )
    return name


__all__ = ["RUNTIMES", "Job", "Outcome", "OutcomeKind", "Runtime", "check_runtime"]
