"""A project's pipeline runs."""

from __future__ import annotations

from fastapi import APIRouter, Query, status
from fastapi.responses import Response

from modelyard.api.deps import API_PREFIX, DEFAULT_PAGE, Ctx, Cursor, Limit, page_out
from modelyard.services.runs import RunService
from modelyard.specs.common import PageOut
from modelyard.specs.runs import AttemptOut, RetryOut, RunCreate, RunDetail, RunOut, TaskRunOut

router = APIRouter(prefix=API_PREFIX, tags=["runs"])


@router.get("/projects/{project}/runs")
def list_runs(
    project: str,
    ctx: Ctx,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE,
    pipeline: str | None = None,
) -> PageOut[RunOut]:
    page = RunService(ctx).list(project, cursor=cursor, limit=limit, pipeline=pipeline)
    return page_out(page, RunOut.model_validate)


@router.post("/projects/{project}/runs", status_code=status.HTTP_201_CREATED)
def create_run(project: str, spec: RunCreate, ctx: Ctx) -> RunOut:
    """Queue a run of a pipeline spec; the run executor in ``modelyard up`` drives it."""
    return RunOut.model_validate(RunService(ctx).create(project, spec))


@router.get("/projects/{project}/runs/{run_id}")
def get_run(project: str, run_id: str, ctx: Ctx) -> RunDetail:
    run, tasks = RunService(ctx).get(project, run_id)
    out = RunOut.model_validate(run)
    return RunDetail(**out.model_dump(), tasks=[TaskRunOut.model_validate(t) for t in tasks])


@router.post("/projects/{project}/runs/{run_id}/cancel")
def cancel_run(project: str, run_id: str, ctx: Ctx) -> RunOut:
    return RunOut.model_validate(RunService(ctx).cancel(project, run_id))


@router.post("/projects/{project}/runs/{run_id}/retry")
def retry_run(project: str, run_id: str, ctx: Ctx) -> RetryOut:
    """Run the failed tasks of a finished run again, and what follows them."""
    run, reset = RunService(ctx).retry(project, run_id)
    return RetryOut(run=RunOut.model_validate(run), reset_tasks=reset)


@router.get("/projects/{project}/runs/{run_id}/attempts")
def list_attempts(project: str, run_id: str, ctx: Ctx, task: str | None = None) -> list[AttemptOut]:
    """Every attempt of the run's tasks (or of one task), oldest first."""
    return [
        AttemptOut(
            id=attempt.id,
            task=name,
            number=attempt.number,
            state=attempt.state,
            started_at=attempt.started_at,
            finished_at=attempt.finished_at,
            exit_code=attempt.exit_code,
            peak_memory_bytes=attempt.peak_memory_bytes,
            error=attempt.error,
        )
        for name, attempt in RunService(ctx).attempts(project, run_id, task)
    ]


@router.get(
    "/projects/{project}/runs/{run_id}/attempts/{attempt_id}/log",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
def attempt_log(
    project: str, run_id: str, attempt_id: str, ctx: Ctx, offset: int = Query(default=0, ge=0)
) -> Response:
    """What the attempt printed and logged from byte ``offset`` on (poll with the
    growing offset to follow a running attempt)."""
    data = RunService(ctx).log(project, run_id, attempt_id, offset)
    return Response(content=data, media_type="text/plain; charset=utf-8")
