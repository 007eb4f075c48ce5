"""A project's pipeline runs."""

from __future__ import annotations

from fastapi import APIRouter

from modelyard.api.deps import API_PREFIX, DEFAULT_PAGE, Ctx, Cursor, Limit, page_out
from modelyard.services.runs import RunService
from modelyard.specs.common import PageOut
from modelyard.specs.runs import RunDetail, RunOut, TaskRunOut

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


@router.get("/projects/{project}/runs/{run_id}")
def get_run(project: str, run_id: str, ctx: Ctx) -> RunDetail:
    run, tasks = RunService(ctx).get(project, run_id)
    out = RunOut.model_validate(run)
    return RunDetail(**out.model_dump(), tasks=[TaskRunOut.model_validate(t) for t in tasks])


@router.post("/projects/{project}/runs/{run_id}/cancel")
def cancel_run(project: str, run_id: str, ctx: Ctx) -> RunOut:
    return RunOut.model_validate(RunService(ctx).cancel(project, run_id))
