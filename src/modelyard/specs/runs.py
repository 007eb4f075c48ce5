"""States of pipeline runs, task runs and attempts: the contract the engine keeps."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from modelyard.specs.common import Spec


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
    version: int


class RunDetail(RunOut):
    tasks: list[TaskRunOut]
