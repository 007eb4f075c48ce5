"""The two DAG shapes of the dispatch benchmark, as modelyard pipelines."""

from __future__ import annotations

import os

from modelyard.pipelines.pipeline import pipeline
from modelyard.pipelines.task import task

TASKS = int(os.environ.get("BENCH_TASKS", "500"))


@task(cache=False)
def noop(i: int) -> int:
    return i


@task(cache=False)
def step(previous: int) -> int:
    return previous + 1


@pipeline
def warm_up() -> None:
    noop(0)


@pipeline
def fan_out() -> None:
    for i in range(TASKS):
        noop(i)


@pipeline
def chain() -> None:
    value = noop(0)
    for _ in range(TASKS - 1):
        value = step(value)
