"""Tasks and pipelines the SDK tests build graphs from (tasks must be module-level)."""

from __future__ import annotations

from datetime import date

from modelyard.pipelines.builder import when
from modelyard.pipelines.pipeline import pipeline
from modelyard.pipelines.task import task
from modelyard.specs.resources import Resources


@task
def extract(day: str, rows: int = 10) -> list[int]:
    return list(range(rows))


@task(retries=3, retry_on=[ConnectionError], timeout=30, pool="warehouse", pool_slots=2)
def load(rows: list[int], table: str) -> int:
    return len(rows)


@task(resources=Resources(cpu="500m", memory="1Gi"), cache=False, secrets=["DB_PASSWORD"])
def score(item: int, factor: float = 1.0) -> float:
    return item * factor


@task
def total(values: list[float]) -> float:
    return sum(values)


@task
def is_big(n: int) -> bool:
    return n > 5


@task
def alert(n: int) -> str:
    return f"big: {n}"


@task
def notify(message: str) -> None:
    return None


@pipeline
def daily(day: date, rows: int = 10, table: str = "trips") -> None:
    """Extract, load, score each row, total, and alert on big loads."""
    raw = extract(day, rows=rows)
    loaded = load(raw, table)
    scores = score.map(raw, factor=2.0)
    summed = total(scores)
    with when(is_big(loaded)):
        alert(loaded)
    notify("done", after=[summed])
