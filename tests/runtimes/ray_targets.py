"""Functions the Ray runtime tests run in Ray workers (importable by name)."""

from __future__ import annotations

import time

import ray


def assigned_resources() -> dict[str, float]:
    """What Ray reserved for the task running this."""
    return dict(ray.get_runtime_context().get_assigned_resources())


def talk_and_sleep(seconds: float) -> None:
    """Say that it started (the job's log), then sleep."""
    print("sleeping", flush=True)
    time.sleep(seconds)


def span(seconds: float) -> tuple[float, float]:
    """Sleep; returns when it started and ended (wall clock)."""
    started = time.time()
    time.sleep(seconds)
    return started, time.time()
