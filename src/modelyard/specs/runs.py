"""States of pipeline runs, task runs and attempts: the contract the engine keeps."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator

from modelyard.specs.common import Spec
from modelyard.specs.pipelines import PipelineSpec


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


class TaskState(StrEnum):
    """A task run's state. ``PENDING`` waits for upstream tasks, ``QUEUED`` for a slot."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    CACHED = "cached"
    FAILED = "failed"
    UPSTREAM_FAILED = "upstream_failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (TaskState.PENDING, TaskState.QUEUED, TaskState.RUNNING)

    @property
    def produced_output(self) -> bool:
        return self in (TaskState.SUCCEEDED, TaskState.CACHED)


class AttemptState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the task raised
    CRASHED = "crashed"  # the process died
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # the engine stopped while it ran


class TaskRunOut(Spec):
    node_id: str
    map_index: int
    state: str
    attempts: int
    cache_key: str | None
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    started_at: datetime | None
    finished_at: datetime | None


class RunCreate(Spec):
    """A run to queue: the pipeline's spec (built by the client from its code) and
    parameters; the run executor inside ``modelyard up`` drives it."""

    spec: PipelineSpec
    params: dict[str, Any] = Field(default_factory=dict)
    logical_date: datetime | None = None
    max_parallelism: int | None = Field(default=None, ge=1)
    runtime: str = Field(
        default="local", max_length=32, description="Where tasks run (checked by the service)."
    )

    @field_validator("logical_date")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("logical_date needs a time zone (e.g. 2025-01-01T00:00:00Z)")
        return value


class RunOut(Spec):
    id: str
    pipeline: str
    source: str
    params: dict[str, Any]
    logical_date: datetime | None
    state: str
    trigger: str
    runtime: str
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: dict[str, Any] | None
    schedule_id: str | None = None
    version: int


class RetryOut(Spec):
    run: RunOut
    reset_tasks: int


class RunDetail(RunOut):
    tasks: list[TaskRunOut]


class AttemptOut(Spec):
    """One attempt of a task: how it went and what it used."""

    id: str
    task: str = Field(description="The task, or 'task[i]' for item i of a mapped task.")
    number: int
    state: str
    started_at: datetime
    finished_at: datetime | None
    exit_code: int | None
    peak_memory_bytes: int | None
    error: dict[str, Any] | None
