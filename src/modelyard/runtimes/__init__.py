"""Where work runs: one small interface, one folder per backend.

The engine hands a runtime ``Job``s (always the same entrypoint, built by the engine) and
gets ``Outcome``s back; optional abilities are flags, never type checks.
"""

from __future__ import annotations

import importlib
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Protocol

from modelyard.errors import InvalidInputError
from modelyard.runtimes.jobs import Job, Outcome, OutcomeKind

if TYPE_CHECKING:
    from modelyard.config import Settings


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


class RuntimeFactory(Protocol):
    """How a registered runtime class is built: from the platform's settings."""

    def from_settings(self, settings: Settings, workers: int | None = None) -> Runtime:
        """A started runtime; ``workers`` is how many jobs the local pool runs at once."""
        ...


# Backends by name, as "module:class", imported only when used so that optional
# dependencies stay optional.
RUNTIMES: dict[str, str] = {
    "local": "modelyard.runtimes.local.pool:WorkerPool",
    "ray": "modelyard.runtimes.ray.tasks:RayRuntime",
    "kubernetes": "modelyard.runtimes.kubernetes.runtime:KubernetesRuntime",
}
# What to install for a runtime whose module needs more than modelyard itself.
_EXTRAS = {"ray": "ray", "kubernetes": "k8s"}


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


def open_runtime(name: str, settings: Settings, workers: int | None = None) -> Runtime:
    """The runtime registered as ``name``, built from ``settings`` and started.

    Args:
        name: A registered runtime (``local``, ``ray``).
        settings: The platform's settings (e.g. ``ray_address``).
        workers: How many jobs the local pool runs at once (default: one per core).

    Raises:
        InvalidInputError: no such runtime (``runtime/unknown``), or its optional
            dependencies are not installed (``runtime/unavailable``).
    """
    module_name, _, class_name = RUNTIMES[check_runtime(name)].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = _EXTRAS.get(name, name)
        raise InvalidInputError(
            f"the {name} runtime is not available here ({exc}): install 'modelyard[{extra}]'",
            code="runtime/unavailable",
            details={"runtime": name},
        ) from exc
    factory: RuntimeFactory = getattr(module, class_name)
    return factory.from_settings(settings, workers)


__all__ = [
    "RUNTIMES",
    "Job",
    "Outcome",
    "OutcomeKind",
    "Runtime",
    "RuntimeFactory",
    "check_runtime",
    "open_runtime",
]
