"""Where work runs: one small interface, one folder per backend.

The engine hands a runtime ``Job``s (always the same entrypoint, built by the engine) and
gets ``Outcome``s back; optional abilities are flags, never type checks.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Protocol

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


__all__ = ["Job", "Outcome", "OutcomeKind", "Runtime"]
