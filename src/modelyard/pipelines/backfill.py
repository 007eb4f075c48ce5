"""Backfill: one run per interval of a schedule between two dates, driven here with at
most ``max_active_runs`` at once (each run's tasks still respect pools)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from modelyard.pipelines.engine import RunEngine
from modelyard.pipelines.runs import NewRun, create_run, interval_key, reset_for_retry
from modelyard.specs.pipelines import PipelineSpec
from modelyard.specs.runs import RunState
from modelyard.store.db import transaction
from modelyard.store.models import PipelineRun


@dataclass(frozen=True)
class Interval:
    logical_date: datetime
    run_id: str
    action: str  # "created", "retried" or "skipped" (it already ran)


def plan(
    engine: RunEngine,
    project_id: str,
    spec: PipelineSpec,
    params: dict[str, Any],
    logical_dates: Sequence[datetime],
    *,
    rerun_failed: bool = False,
    created_by: str = "local",
) -> list[Interval]:
    """Create a queued run for every interval that has none (and, with
    ``rerun_failed``, queue failed or cancelled ones again), held by ``engine``.

    Intervals that already have a run (from the scheduler or an earlier backfill) are
    skipped: an interval never gets two runs.
    """
    planned = []
    with transaction(engine.sessions) as session:
        for logical_date in logical_dates:
            key = interval_key(spec.name, logical_date)
            existing = session.scalar(
                select(PipelineRun).where(
                    PipelineRun.project_id == project_id, PipelineRun.interval_key == key
                )
            )
            if existing is None:
                run = create_run(
                    session,
                    project_id,
                    spec,
                    params,
                    NewRun(
                        logical_date=logical_date,
                        trigger="backfill",
                        created_by=created_by,
                        interval_key=key,
                        owner=engine.owner,
                        lease=engine.settings.lease,
                    ),
                )
                planned.append(Interval(logical_date, run.id, "created"))
            elif rerun_failed and existing.state in (RunState.FAILED, RunState.CANCELLED):
                reset_for_retry(session, existing.id)
                planned.append(Interval(logical_date, existing.id, "retried"))
            else:
                planned.append(Interval(logical_date, existing.id, "skipped"))
    return planned


def drive(
    engine: RunEngine,
    intervals: Sequence[Interval],
    max_active_runs: int,
    on_done: Callable[[Interval, RunState], None] | None = None,
    stop: threading.Event | None = None,
) -> dict[str, RunState]:
    """Drive the created and retried runs, oldest interval first, at most
    ``max_active_runs`` at once; returns each run's final state."""
    todo = [i for i in intervals if i.action != "skipped"]
    states: dict[str, RunState] = {}

    def one(interval: Interval) -> None:
        state = engine.execute(interval.run_id, stop=stop)
        states[interval.run_id] = state
        if on_done is not None:
            on_done(interval, state)

    with ThreadPoolExecutor(max_active_runs, thread_name_prefix="modelyard-backfill") as pool:
        for future in [pool.submit(one, interval) for interval in todo]:
            future.result()
    return states
