"""A project's schedules."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response, status

from modelyard.api.deps import API_PREFIX, Ctx, IfMatch
from modelyard.pipelines.runs import utcnow
from modelyard.pipelines.scheduling import next_run_at
from modelyard.services.schedules import ScheduleService
from modelyard.specs.runs import RunOut
from modelyard.specs.schedules import ScheduleApply, ScheduleOut, ScheduleUpdate
from modelyard.store.models import Project, Schedule

router = APIRouter(prefix=API_PREFIX, tags=["schedules"])


def _out(project: Project, schedule: Schedule, response: Response | None = None) -> ScheduleOut:
    if response is not None:
        response.headers["ETag"] = f'"{schedule.version}"'
    return ScheduleOut(
        id=schedule.id,
        project=project.name,
        pipeline=schedule.pipeline,
        source=schedule.source,
        cron=schedule.cron,
        timezone=schedule.timezone,
        start_date=schedule.start_date,
        end_date=schedule.end_date,
        catchup=schedule.catchup,
        max_active_runs=schedule.max_active_runs,
        paused=schedule.paused,
        params=dict(schedule.params),
        last_logical_date=schedule.last_logical_date,
        next_run_at=next_run_at(schedule, utcnow()),
        version=schedule.version,
        created_at=schedule.created_at,
    )


@router.get("/projects/{project}/schedules")
def list_schedules(project: str, ctx: Ctx) -> list[ScheduleOut]:
    record, rows = ScheduleService(ctx).list(project)
    return [_out(record, row) for row in rows]


@router.get("/projects/{project}/schedules/{pipeline}")
def get_schedule(project: str, pipeline: str, ctx: Ctx, response: Response) -> ScheduleOut:
    record, schedule = ScheduleService(ctx).get(project, pipeline)
    return _out(record, schedule, response)


@router.put("/projects/{project}/schedules")
def apply_schedule(
    project: str, spec: ScheduleApply, ctx: Ctx, if_match: IfMatch, response: Response
) -> ScheduleOut:
    """Create a pipeline's schedule (paused) or replace its spec and timing."""
    record, schedule, created = ScheduleService(ctx).apply(project, spec, expected_version=if_match)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return _out(record, schedule, response)


@router.patch("/projects/{project}/schedules/{pipeline}")
def update_schedule(
    project: str,
    pipeline: str,
    spec: ScheduleUpdate,
    ctx: Ctx,
    if_match: IfMatch,
    response: Response,
) -> ScheduleOut:
    record, schedule = ScheduleService(ctx).update(
        project, pipeline, spec, expected_version=if_match
    )
    return _out(record, schedule, response)


@router.post("/projects/{project}/schedules/{pipeline}/pause")
def pause_schedule(project: str, pipeline: str, ctx: Ctx, response: Response) -> ScheduleOut:
    record, schedule = ScheduleService(ctx).set_paused(project, pipeline, True)
    return _out(record, schedule, response)


@router.post("/projects/{project}/schedules/{pipeline}/unpause")
def unpause_schedule(project: str, pipeline: str, ctx: Ctx, response: Response) -> ScheduleOut:
    record, schedule = ScheduleService(ctx).set_paused(project, pipeline, False)
    return _out(record, schedule, response)


@router.post(
    "/projects/{project}/schedules/{pipeline}/trigger", status_code=status.HTTP_201_CREATED
)
def trigger_schedule(
    project: str, pipeline: str, ctx: Ctx, logical_date: datetime | None = None
) -> RunOut:
    """Queue a run of the scheduled pipeline now."""
    return RunOut.model_validate(
        ScheduleService(ctx).trigger(project, pipeline, logical_date=logical_date)
    )


@router.delete("/projects/{project}/schedules/{pipeline}", status_code=status.HTTP_204_NO_CONTENT)
def delete_schedule(project: str, pipeline: str, ctx: Ctx, if_match: IfMatch) -> None:
    ScheduleService(ctx).delete(project, pipeline, expected_version=if_match)
