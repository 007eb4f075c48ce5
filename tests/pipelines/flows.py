"""Pipelines the engine tests run (tasks run in worker processes: state goes to files)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pyarrow as pa

from modelyard.pipelines.builder import when
from modelyard.pipelines.execute import current_context
from modelyard.pipelines.pipeline import pipeline
from modelyard.pipelines.task import task


def trace(folder: str, name: str) -> int:
    """Record one execution of ``name``; returns how many there have been."""
    path = Path(folder) / f"{name}.count"
    with path.open("a") as handle:
        handle.write(f"{os.getpid()} {time.time()}\n")
    return len(path.read_text().splitlines())


@task
def numbers(trace_dir: str, n: int) -> list[int]:
    trace(trace_dir, "numbers")
    return list(range(n))


@task
def square(x: int, trace_dir: str) -> int:
    trace(trace_dir, "square")
    return x * x


@task
def add_up(values: list[int], trace_dir: str) -> int:
    trace(trace_dir, "add_up")
    return sum(values)


@task
def is_large(total: int, threshold: int) -> bool:
    return total > threshold


@task
def shout(total: int, trace_dir: str) -> str:
    trace(trace_dir, "shout")
    context = current_context()
    return f"{context.task}: {total}"


@task
def table(rows: int) -> pa.Table:
    return pa.table({"id": pa.array(range(rows), pa.int64()), "v": pa.array([1.5] * rows)})


@task
def count_rows(data: pa.Table) -> int:
    return data.num_rows


@pipeline
def squares(trace_dir: str, n: int = 4, threshold: int = 10) -> None:
    values = numbers(trace_dir, n)
    squared = square.map(values, trace_dir=trace_dir)
    total = add_up(squared, trace_dir)
    with when(is_large(total, threshold)):
        shout(total, trace_dir)


@pipeline
def tables(rows: int = 1000) -> None:
    count_rows(table(rows))


@task(retries=3, retry_delay=0.01)
def flaky(trace_dir: str, failures: int) -> str:
    if trace(trace_dir, "flaky") <= failures:
        raise ConnectionError("the warehouse hung up")
    return "ok"


@task(retries=3, retry_delay=0.01, retry_on=[ConnectionError])
def picky(trace_dir: str) -> None:
    trace(trace_dir, "picky")
    raise ValueError("a bug, not a blip")


@task(retries=2, retry_delay=0.01, retry_on_exit_codes=[9])
def dies(trace_dir: str) -> str:
    if trace(trace_dir, "dies") == 1:
        os._exit(9)
    return "survived"


@task(timeout=0.5)
def hangs(seconds: float) -> None:
    time.sleep(seconds)


@task
def after_hang(value: None) -> None:
    return None


@task
def returns_object() -> object:
    return object()


@task(pool="warehouse")
def pooled(trace_dir: str, label: str) -> str:
    trace(trace_dir, f"pooled-start-{label}")
    time.sleep(0.3)
    trace(trace_dir, f"pooled-end-{label}")
    return label


@task
def where() -> str:
    """Which runtime's worker runs this: a Ray worker has Ray initialised."""
    ray = sys.modules.get("ray")
    return "ray" if ray is not None and ray.is_initialized() else "local"


@pipeline
def where_flow() -> None:
    where()


@task
def cluster_of() -> str:
    """The address of the Ray cluster whose worker runs this."""
    import ray

    return str(ray.get_runtime_context().gcs_address)


@pipeline
def cluster_flow() -> None:
    cluster_of()


@pipeline
def flaky_flow(trace_dir: str, failures: int = 2) -> None:
    flaky(trace_dir, failures)


@pipeline
def picky_flow(trace_dir: str) -> None:
    picky(trace_dir)


@pipeline
def dying_flow(trace_dir: str) -> None:
    dies(trace_dir)


@pipeline
def hanging_flow(seconds: float = 30.0) -> None:
    after_hang(hangs(seconds))


@pipeline
def bad_output_flow() -> None:
    returns_object()


@pipeline
def pooled_flow(trace_dir: str) -> None:
    for label in ("a", "b", "c"):
        pooled(trace_dir, label)


@task
def not_a_list() -> int:
    return 5


@pipeline
def bad_map_flow(trace_dir: str) -> None:
    square.map(not_a_list(), trace_dir=trace_dir)


@task(pool="tiny", pool_slots=5)
def heavy() -> None:
    return None


@pipeline
def heavy_flow() -> None:
    heavy()


@task
def dated() -> str:
    return str(current_context().logical_date)


@pipeline
def dated_flow() -> None:
    dated()


@task(timeout=1.0)
def spawns_and_hangs(pid_file: str) -> None:
    import subprocess

    child = subprocess.Popen(["sleep", "60"])
    Path(pid_file).write_text(str(child.pid))
    time.sleep(60)


@pipeline
def spawning_flow(pid_file: str) -> None:
    spawns_and_hangs(pid_file)


@task
def sleepy(trace_dir: str, seconds: float) -> float:
    trace(trace_dir, "sleepy")
    time.sleep(seconds)
    return seconds


@pipeline
def sleepy_flow(trace_dir: str, seconds: float = 1.0) -> None:
    sleepy(trace_dir, seconds)
