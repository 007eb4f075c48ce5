"""Schedules: cron intervals, catchup, start/end, max_active_runs and exactly one run per
interval across scheduler restarts, racing schedulers and backfills."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from modelyard.pipelines import backfill
from modelyard.pipelines.errors import PipelineDefinitionError
from modelyard.pipelines.pipeline import pipeline
from modelyard.pipelines.runs import request_cancel
from modelyard.pipelines.scheduling import Intervals, Scheduler, due, next_run_at
from modelyard.specs.runs import RunState
from modelyard.specs.schedules import ScheduleSpec
from modelyard.store.db import transaction
from modelyard.store.models import PipelineRun, Schedule
from tests.pipelines import flows
from tests.pipelines.conftest import Runner

pytestmark = pytest.mark.integration

START = datetime(2025, 1, 1, tzinfo=UTC)


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2025, 1, day, hour, minute, tzinfo=UTC)


# -- interval arithmetic -------------------------------------------------------------


def test_daily_intervals_start_at_midnight_and_end_a_day_later() -> None:
    daily = Intervals("@daily")
    assert daily.first_at_or_after(at(1)) == at(1)
    assert daily.first_at_or_after(at(1, 0, 1)) == at(2)
    assert daily.next_after(at(1)) == at(2)
    assert daily.at_or_before(at(3, 12)) == at(3)
    assert daily.at_or_before(at(3)) == at(3)
    # At 3 Jan 12:00 the newest finished interval is 2 Jan (it ended at 3 Jan 00:00).
    assert daily.latest_finished(at(3, 12)) == at(2)
    assert list(daily.between(at(1), at(3))) == [at(1), at(2), at(3)]


def test_a_time_zone_moves_the_ticks_and_follows_daylight_saving_time() -> None:
    paris = Intervals("@daily", "Europe/Paris")
    # Midnight in Paris is 23:00 UTC in winter and 22:00 UTC in summer.
    assert paris.next_after(at(1)) == datetime(2025, 1, 1, 23, tzinfo=UTC)
    spring = list(
        paris.between(datetime(2025, 3, 29, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))
    )
    # Clocks go forward on 30 March 2025: midnights of the 30th, 31st and 1 April.
    assert spring == [
        datetime(2025, 3, 29, 23, tzinfo=UTC),
        datetime(2025, 3, 30, 22, tzinfo=UTC),
        datetime(2025, 3, 31, 22, tzinfo=UTC),
    ]


def test_presets_and_cron_expressions_are_validated() -> None:
    for cron in ("@hourly", "@daily", "@weekly", "@monthly", "@yearly", "*/5 * * * *"):
        assert ScheduleSpec(cron=cron).cron == cron
    for cron, words in (("@fortnightly", "unknown preset"), ("61 * * * *", "not a cron")):
        with pytest.raises(ValidationError, match=words):
            ScheduleSpec(cron=cron)
    with pytest.raises(ValidationError, match="unknown time zone"):
        ScheduleSpec(cron="@daily", timezone="Mars/Olympus")
    with pytest.raises(ValidationError, match="end_date is before start_date"):
        ScheduleSpec(cron="@daily", start_date=at(5), end_date=at(1))


def test_a_naive_start_date_is_read_in_the_schedules_time_zone() -> None:
    spec = ScheduleSpec(cron="@daily", timezone="Asia/Tokyo", start_date=datetime(2025, 1, 1))
    assert spec.start_date == datetime(2024, 12, 31, 15, tzinfo=UTC)


def test_a_pipeline_declares_its_schedule_and_a_bad_one_is_refused_at_definition() -> None:
    assert flows.squares.schedule is None

    @pipeline(schedule="@hourly")
    def hourly() -> None:
        flows.table(1)

    assert hourly.schedule == ScheduleSpec(cron="@hourly")
    with pytest.raises(PipelineDefinitionError, match="invalid schedule") as raised:
        pipeline(schedule="every day")
    assert raised.value.code == "pipeline/invalid_schedule"


def _schedule(**fields: object) -> Schedule:
    values: dict[str, object] = {
        "cron": "@daily",
        "timezone": "UTC",
        "start_date": START,
        "catchup": True,
        "max_active_runs": 16,
        "paused": False,
        "last_logical_date": None,
        "end_date": None,
    }
    values.update(fields)
    return Schedule(**values)


def test_catchup_owes_every_missed_interval_and_without_it_only_the_newest() -> None:
    now = at(4, 6)
    assert due(_schedule(), now, 100) == [at(1), at(2), at(3)]
    assert due(_schedule(), now, 2) == [at(1), at(2)]
    assert due(_schedule(last_logical_date=at(2)), now, 100) == [at(3)]
    assert due(_schedule(catchup=False), now, 100) == [at(3)]
    assert due(_schedule(catchup=False, last_logical_date=at(3)), now, 100) == []
    assert due(_schedule(end_date=at(2)), now, 100) == [at(1), at(2)]
    assert due(_schedule(start_date=at(10)), now, 100) == []


def test_next_run_at_is_the_end_of_the_next_interval_or_none() -> None:
    assert next_run_at(_schedule(last_logical_date=at(3)), at(4, 6)) == at(5)
    assert next_run_at(_schedule(), at(4, 6)) == at(4, 6)  # owed now
    assert next_run_at(_schedule(paused=True), at(4, 6)) is None
    assert next_run_at(_schedule(last_logical_date=at(3), end_date=at(3)), at(4, 6)) is None


# -- the scheduler against the store ---------------------------------------------------


def _store_schedule(runner: Runner, **fields: object) -> str:
    spec = flows.squares.spec("tests/pipelines/flows.py:squares")
    params = flows.squares.validate_params({"trace_dir": str(runner.trace_dir), "n": 1})
    with transaction(runner.sessions) as session:
        schedule = _schedule(
            project_id=runner.project_id,
            pipeline=spec.name,
            source=spec.source,
            spec=spec.model_dump(mode="json"),
            params=params,
            **fields,
        )
        session.add(schedule)
        session.flush()
        return schedule.id


def _scheduled_runs(runner: Runner) -> list[PipelineRun]:
    with runner.sessions() as session:
        return list(
            session.scalars(
                select(PipelineRun)
                .where(PipelineRun.schedule_id.is_not(None))
                .order_by(PipelineRun.logical_date)
            )
        )


def test_a_schedule_fires_once_per_interval_across_scheduler_restarts(runner: Runner) -> None:
    _store_schedule(runner)
    first = Scheduler(runner.sessions).tick(at(3, 1))
    assert len(first) == 2
    # A restarted scheduler (a new instance) at the same moment owes nothing.
    assert Scheduler(runner.sessions).tick(at(3, 1)) == []
    assert Scheduler(runner.sessions).tick(at(3, 23, 59)) == []
    assert len(Scheduler(runner.sessions).tick(at(4))) == 1
    runs = _scheduled_runs(runner)
    assert [r.logical_date for r in runs] == [at(1), at(2), at(3)]
    assert {r.trigger for r in runs} == {"schedule"}
    assert all(r.state == RunState.QUEUED and r.owner is None for r in runs)


def test_racing_schedulers_create_each_interval_once(runner: Runner) -> None:
    _store_schedule(runner)
    barrier = threading.Barrier(4)
    created: list[list[str]] = []

    def tick() -> None:
        barrier.wait()
        created.append(Scheduler(runner.sessions).tick(at(6)))

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(len(ids) for ids in created) == 5
    assert [r.logical_date for r in _scheduled_runs(runner)] == [at(d) for d in range(1, 6)]


def test_max_active_runs_holds_back_new_runs_until_one_finishes(runner: Runner) -> None:
    _store_schedule(runner, max_active_runs=2)
    scheduler = Scheduler(runner.sessions)
    assert len(scheduler.tick(at(6))) == 2
    assert scheduler.tick(at(6)) == []
    oldest = _scheduled_runs(runner)[0]
    assert runner.engine.execute(oldest.id) is RunState.SUCCEEDED
    assert len(scheduler.tick(at(6))) == 1
    assert [r.logical_date for r in _scheduled_runs(runner)] == [at(1), at(2), at(3)]


def test_paused_schedules_create_nothing_and_catchup_off_skips_missed_days(
    runner: Runner,
) -> None:
    schedule_id = _store_schedule(runner, paused=True, catchup=False)
    scheduler = Scheduler(runner.sessions)
    assert scheduler.tick(at(9, 5)) == []
    with transaction(runner.sessions) as session:
        row = session.get(Schedule, schedule_id)
        assert row is not None
        row.paused = False
    assert len(scheduler.tick(at(9, 5))) == 1
    assert [r.logical_date for r in _scheduled_runs(runner)] == [at(8)]


def test_an_interval_a_backfill_ran_is_not_run_again_by_the_scheduler(runner: Runner) -> None:
    _store_schedule(runner)
    spec = flows.squares.spec("tests/pipelines/flows.py:squares")
    params = flows.squares.validate_params({"trace_dir": str(runner.trace_dir), "n": 1})
    planned = backfill.plan(runner.engine, runner.project_id, spec, params, [at(1), at(2)])
    assert [p.action for p in planned] == ["created", "created"]
    states = backfill.drive(runner.engine, planned, max_active_runs=2)
    assert set(states.values()) == {RunState.SUCCEEDED}

    created = Scheduler(runner.sessions).tick(at(4))
    assert len(created) == 1  # 3 Jan only
    with runner.sessions() as session:
        dates = session.scalars(
            select(PipelineRun.logical_date).order_by(PipelineRun.logical_date)
        ).all()
    assert dates == [at(1), at(2), at(3)]

    again = backfill.plan(runner.engine, runner.project_id, spec, params, [at(1), at(2), at(3)])
    assert [p.action for p in again] == ["skipped", "skipped", "skipped"]


def test_backfill_reruns_failed_intervals_only_when_asked(runner: Runner) -> None:
    spec = flows.squares.spec("tests/pipelines/flows.py:squares")
    params = flows.squares.validate_params({"trace_dir": str(runner.trace_dir), "n": 1})
    planned = backfill.plan(runner.engine, runner.project_id, spec, params, [at(1)])
    assert request_cancel(runner.sessions, planned[0].run_id)
    assert backfill.drive(runner.engine, planned, 1) == {planned[0].run_id: RunState.CANCELLED}

    assert backfill.plan(runner.engine, runner.project_id, spec, params, [at(1)])[0].action == (
        "skipped"
    )
    rerun = backfill.plan(
        runner.engine, runner.project_id, spec, params, [at(1)], rerun_failed=True
    )
    assert rerun[0].action == "retried"
    assert backfill.drive(runner.engine, rerun, 1) == {planned[0].run_id: RunState.SUCCEEDED}


def test_backfill_drives_at_most_max_active_runs_at_once(runner: Runner) -> None:
    spec = flows.squares.spec("tests/pipelines/flows.py:squares")
    params = flows.squares.validate_params({"trace_dir": str(runner.trace_dir), "n": 1})
    days = [at(d) for d in range(1, 5)]
    planned = backfill.plan(runner.engine, runner.project_id, spec, params, days)
    active: list[int] = []
    lock = threading.Lock()
    engine = runner.engine
    original = engine.execute
    current = [0]

    def counting(run_id: str, **kwargs: object) -> RunState:
        with lock:
            current[0] += 1
            active.append(current[0])
        try:
            return original(run_id, **kwargs)  # type: ignore[arg-type]
        finally:
            with lock:
                current[0] -= 1

    engine.execute = counting  # type: ignore[method-assign]
    try:
        states = backfill.drive(engine, planned, max_active_runs=2)
    finally:
        del engine.execute
    assert set(states.values()) == {RunState.SUCCEEDED}
    assert max(active) == 2
    with runner.sessions() as session:
        logical = {
            r.logical_date
            for r in session.scalars(select(PipelineRun).where(PipelineRun.trigger == "backfill"))
        }
    assert logical == set(days)
