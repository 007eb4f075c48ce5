"""The same two DAG shapes in Prefect 3, run in Prefect's own environment.

Prints one JSON line: {"fan_out": seconds, "chain": seconds, "tasks": n, "version": ...}.
"""

from __future__ import annotations

import json
import os
import sys
import time

from prefect import flow, task
from prefect.futures import wait

TASKS = int(os.environ.get("BENCH_TASKS", "500"))


@task
def noop(i: int) -> int:
    return i


@task
def step(previous: int) -> int:
    return previous + 1


@flow
def fan_out() -> None:
    wait([noop.submit(i) for i in range(TASKS)])


@flow
def chain() -> None:
    value = noop(0)
    for _ in range(TASKS - 1):
        value = step(value)


@flow
def warm_up() -> None:
    noop(0)


def main() -> None:
    import prefect

    warm_up()
    timings = {}
    for shape in (fan_out, chain):
        started = time.perf_counter()
        shape()
        timings[shape.name.replace("-", "_")] = time.perf_counter() - started
    print(json.dumps({**timings, "tasks": TASKS, "version": prefect.__version__}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
