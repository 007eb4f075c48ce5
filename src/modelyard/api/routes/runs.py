"""A project's pipeline runs."""

from __future__ import annotations

from fastapi import APIRouter, status

from modelyard.api.deps import API_PREFIX, DEFAULT_PAGE, Ctx, Cursor, Limit, page_out
from modelyard.services.runs import RunService
from modelyard.specs.common import PageOut
from modelyard.specs.runs import RetryOut, RunCreate, RunDetail, RunOut, TaskRunOut

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
