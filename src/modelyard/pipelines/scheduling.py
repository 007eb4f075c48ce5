"""Schedules in time: the intervals of a cron expression, and the scheduler that creates
one run per finished interval.

The run for the interval ``[t, next(t))`` has the logical date ``t`` and is created at
``next(t)`` (Airflow's data intervals). A schedule keeps the newest logical date it
created a run for and moves it forward in the same transaction as it creates the run;
runs carry a unique interval key. So an interval gets exactly one run, whether the
scheduler restarts, two schedulers race, or a backfill covered it first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from modelyard.errors import ModelyardError
from modelyard.pipelines.runs import NewRun, create_run, interval_key, utcnow
from modelyard.polling import Poller
from modelyard.specs.pipelines import PipelineSpec
from modelyard.specs.runs import RunState
from modelyard.store.db import transaction
from modelyard.store.models import PipelineRun, Schedule

logger = logging.getLogger(__name__)


class Intervals:
    """The ticks of a cron expression in a time zone."""

    def __init__(self, cron: str, timezone: str = "UTC") -> None:
        self.cron = cron
        self.zone = ZoneInfo(timezone)

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment``."""
        return self._utc(croniter(self.cron, moment.astimezone(self.zone)).get_next(datetime))

    def first_at_or_after(self, moment: datetime) -> datetime:
        tick = self.next_after(moment - timedelta(seconds=1))
        return tick if tick >= moment else self.next_after(tick)

    def previous(self, tick: datetime) -> datetime:
        """The tick before ``tick``."""
        return self._utc(croniter(self.cron, tick.astimezone(self.zone)).get_prev(datetime))

    def at_or_before(self, moment: datetime) -> datetime:
        """The newest tick not after ``moment``: the start of the interval it lies in."""
        tick = self.previous(moment)
        following = self.next_after(tick)
        return following if following <= moment else tick

    def latest_finished(self, now: datetime) -> datetime:
        """The logical date of the newest interval that has ended by ``now``."""
        return self.previous(self.at_or_before(now))

    def between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Logical dates of the intervals that start in ``[start, end]``."""
        tick = self.first_at_or_after(start)
        while tick <= end:
            yield tick
            tick = self.next_after(tick)

    @staticmethod
    def _utc(moment: datetime) -> datetime:
        return moment.astimezone(UTC)


def due(schedule: Schedule, now: datetime, limit: int) -> list[datetime]:
    """Logical dates the schedule owes a run for at ``now``, oldest first, at most
    ``limit``: every missed interval with catchup, else only the newest finished one."""
    intervals = Intervals(schedule.cron, schedule.timezone)
    last = schedule.last_logical_date
    if not schedule.catchup:
        candidates = [intervals.latest_finished(now)]
    else:
        candidates = []
        tick = (
            intervals.next_after(last)
            if last is not None
            else intervals.first_at_or_after(schedule.start_date)
        )
        while len(candidates) < limit and intervals.next_after(tick) <= now:
            candidates.append(tick)
            tick = intervals.next_after(tick)
    return [
        tick
        for tick in candidates
        if tick >= schedule.start_date
        and (last is None or tick > last)
        and (schedule.end_date is None or tick <= schedule.end_date)
    ][:limit]


def next_run_at(schedule: Schedule, now: datetime) -> datetime | None:
    """When the scheduler will next create a run (None: paused, or past ``end_date``)."""
    if schedule.paused:
        return None
    if due(schedule, now, 1):
        return now
    intervals = Intervals(schedule.cron, schedule.timezone)
    last = schedule.last_logical_date
    tick = (
        intervals.next_after(last)
        if last is not None
        else intervals.first_at_or_after(schedule.start_date)
    )
    if not schedule.catchup:
        tick = max(tick, intervals.at_or_before(now))
    if schedule.end_date is not None and tick > schedule.end_date:
        return None
    return intervals.next_after(tick)


class Scheduler(Poller):
    """Creates the runs schedules owe; one ``tick`` is safe to repeat at any moment.

    Args:
        sessions: The metadata store.
        poll_seconds: How often the background thread ticks.
    """

    def __init__(self, sessions: sessionmaker[Session], poll_seconds: float = 5.0) -> None:
        super().__init__("modelyard-scheduler", poll_seconds)
        self.sessions = sessions

    def tick(self, now: datetime | None = None) -> list[str]:
        """Create every run that is due; returns their ids."""
        moment = now or utcnow()
        with self.sessions() as session:
            ids = list(session.scalars(select(Schedule.id).where(Schedule.paused.is_(False))))
        created: list[str] = []
        for schedule_id in ids:
            try:
                created += self._fire(schedule_id, moment)
            except IntegrityError:
                logger.info("schedule %s: another scheduler created the run first", schedule_id)
            except ModelyardError as exc:  # e.g. a pool the pipeline needs was deleted
                logger.error("schedule %s cannot create its run: %s", schedule_id, exc.message)
        return created

    def _fire(self, schedule_id: str, now: datetime) -> list[str]:
        with transaction(self.sessions) as session:
            # Lock the schedule's row: a second scheduler waits here, then sees our runs.
            session.execute(
                update(Schedule).where(Schedule.id == schedule_id).values(cron=Schedule.cron)
            )
            schedule = session.get(Schedule, schedule_id)
            if schedule is None or schedule.paused:
                return []
            active = session.scalar(
                select(func.count())
                .select_from(PipelineRun)
                .where(
                    PipelineRun.schedule_id == schedule_id,
                    PipelineRun.state.in_([RunState.QUEUED, RunState.RUNNING]),
                )
            )
            free = schedule.max_active_runs - int(active or 0)
            if free <= 0:
                return []
            spec = PipelineSpec.model_validate(schedule.spec)
            created = []
            for logical_date in due(schedule, now, free):
                key = interval_key(schedule.pipeline, logical_date)
                taken = session.scalar(
                    select(PipelineRun.id).where(
                        PipelineRun.project_id == schedule.project_id,
                        PipelineRun.interval_key == key,
                    )
                )
                schedule.last_logical_date = logical_date
                if taken is not None:  # a backfill ran this interval already
                    continue
                run = create_run(
                    session,
                    schedule.project_id,
                    spec,
                    dict(schedule.params),
                    NewRun(
                        logical_date=logical_date,
                        trigger="schedule",
                        created_by="scheduler",
                        schedule_id=schedule.id,
                        interval_key=key,
                    ),
                )
                created.append(run.id)
                logger.info(
                    "schedule %s created run %s for %s",
                    schedule.pipeline,
                    run.id,
                    logical_date.isoformat(),
                )
            return created

    def poll(self) -> list[str]:
        return self.tick()
