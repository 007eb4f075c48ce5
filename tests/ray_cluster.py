"""One local Ray for the whole test session, shared by every test that runs on Ray."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from modelyard.runtimes.ray.tasks import RayRuntime

RAY_CPUS = 2


@pytest.fixture(scope="session")
def ray_runtime() -> Iterator[RayRuntime]:
    """The Ray runtime on a local Ray of ``RAY_CPUS`` CPUs, started once (a few seconds)
    and shut down at the end of the session; runtimes opened later reuse it."""
    pytest.importorskip("ray", reason="the Ray runtime needs 'modelyard[ray]'")
    from modelyard.runtimes.ray.tasks import RayRuntime

    with RayRuntime(num_cpus=RAY_CPUS, stop_grace=5.0) as runtime:
        yield runtime
