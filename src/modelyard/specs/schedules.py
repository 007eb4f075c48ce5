"""Schedules: when a pipeline runs by itself, as Airflow users expect it.

A run covers one interval of the cron expression: the run for ``[t, next(t))`` has the
logical date ``t`` and is created once the interval has ended, at ``next(t)``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import Field, field_validator, model_validator

from modelyard.specs.common import PatchSpec, Spec
from modelyard.specs.pipelines import PipelineSpec

PRESETS = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")


def _valid_cron(value: str) -> str:
    value = value.strip()
    if value.startswith("@") and value not in PRESETS:
        raise ValueError(f"unknown preset {value!r}; use one of {', '.join(PRESETS)}")
    if not croniter.is_valid(value):
        raise ValueError(f"{value!r} is not a cron expression (e.g. '0 3 * * *' or '@daily')")
    return value


def _valid_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r} (e.g. 'UTC', 'Europe/Paris')") from exc
    return value


class ScheduleSpec(Spec):
    """When a pipeline runs.

    Args:
        cron: A cron expression or preset (``@hourly``, ``@daily``, ``@weekly``,
            ``@monthly``, ``@yearly``).
        timezone: The zone the expression is read in (``@daily`` is midnight there,
            daylight saving time included).
        start_date: The first interval starts at the first tick at or after this
            (a naive value is read in ``timezone``); default: when the schedule is created.
        end_date: No interval starts after this.
        catchup: Create a run for every interval missed since ``start_date`` (or since
            the scheduler last ran); off, only the latest finished interval runs.
        max_active_runs: At most this many of the schedule's runs queued or running.
        paused: A new schedule is paused until someone unpauses it.
        params: Parameters of every run the schedule creates.
    """

    cron: str = Field(max_length=128)
    timezone: str = "UTC"
    start_date: datetime | None = None
    end_date: datetime | None = None
    catchup: bool = False
    max_active_runs: int = Field(default=16, ge=1, le=1000)
    paused: bool = True
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        return _valid_cron(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _valid_zone(value)

    @model_validator(mode="after")
    def _dates_in_zone(self) -> ScheduleSpec:
        zone = ZoneInfo(self.timezone)
        if self.start_date is not None and self.start_date.tzinfo is None:
            self.start_date = self.start_date.replace(tzinfo=zone)
        if self.end_date is not None and self.end_date.tzinfo is None:
            self.end_date = self.end_date.replace(tzinfo=zone)
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")
        return self


class ScheduleApply(Spec):
    """Create or replace a pipeline's schedule (``modelyard schedules apply``): the
    pipeline's spec as its code builds it now, and when it runs. Applying again keeps
    whether it is paused and which intervals already ran."""

    spec: PipelineSpec
    schedule: ScheduleSpec


class ScheduleUpdate(PatchSpec):
    """A partial change of a schedule (pausing is its own endpoint)."""

    nullable = frozenset({"end_date"})

    cron: str | None = Field(default=None, max_length=128)
    timezone: str | None = None
    end_date: datetime | None = None
    catchup: bool | None = None
    max_active_runs: int | None = Field(default=None, ge=1, le=1000)
    params: dict[str, Any] | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else _valid_cron(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else _valid_zone(value)

    @field_validator("end_date")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("end_date needs a time zone (e.g. 2025-01-01T00:00:00Z)")
        return value


class ScheduleOut(Spec):
    id: str
    project: str
    pipeline: str
    source: str
    cron: str
    timezone: str
    start_date: datetime
    end_date: datetime | None
    catchup: bool
    max_active_runs: int
    paused: bool
    params: dict[str, Any]
    last_logical_date: datetime | None
    next_run_at: datetime | None = Field(
        description="When the next run is created, if the schedule is unpaused."
    )
    version: int
    created_at: datetime
