"""A project's training jobs."""

from __future__ import annotations

from fastapi import APIRouter, Query, status
from fastapi.responses import Response

from modelyard.api.deps import API_PREFIX, Ctx
from modelyard.services.training import TrainingService
from modelyard.specs.training import (
    TrainingJobDetail,
    TrainingJobOut,
    TrainingJobSpec,
)
from modelyard.training import jobs

router = APIRouter(prefix=API_PREFIX, tags=["training"])


@router.post("/projects/{project}/jobs", status_code=status.HTTP_201_CREATED)
def submit_job(project: str, spec: TrainingJobSpec, ctx: Ctx) -> TrainingJobOut:
    """Queue a training job; the job executor in ``modelyard up`` runs it."""
    return jobs.job_out(TrainingService(ctx).submit(project, spec))


@router.get("/projects/{project}/jobs")
def list_jobs(
    project: str, ctx: Ctx, limit: int = Query(default=50, ge=1, le=200)
) -> list[TrainingJobOut]:
    return [jobs.job_out(job) for job in TrainingService(ctx).list(project, limit)]


@router.get("/projects/{project}/jobs/{job_id}")
def get_job(project: str, job_id: str, ctx: Ctx) -> TrainingJobDetail:
    job, attempts = TrainingService(ctx).get(project, job_id)
    return jobs.job_detail(job, attempts)


@router.post("/projects/{project}/jobs/{job_id}/cancel")
def cancel_job(project: str, job_id: str, ctx: Ctx) -> TrainingJobOut:
    return jobs.job_out(TrainingService(ctx).cancel(project, job_id))


@router.get(
    "/projects/{project}/jobs/{job_id}/logs",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
def job_log(
    project: str,
    job_id: str,
    ctx: Ctx,
    attempt: int = Query(default=1, ge=1),
    rank: int = Query(default=0, ge=0),
) -> Response:
    """What one worker of one attempt printed."""
    data = TrainingService(ctx).log(project, job_id, attempt, rank)
    return Response(content=data, media_type="text/plain; charset=utf-8")
