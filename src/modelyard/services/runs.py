"""Pipeline runs of a project: read them, cancel them (engines do the running)."""

from __future__ import annotations

from collections.abc import Sequence

from modelyard.auth.roles import Permission
from modelyard.errors import NotFoundError
from modelyard.services.context import ServiceContext
from modelyard.specs.runs import RunState
from modelyard.store.models import PipelineRun, Project, TaskRun
from modelyard.store.pagination import Page
from modelyard.store.repositories import RunRepository


class RunService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.runs = RunRepository(ctx.session)

    def list(
        self, project: str, *, cursor: str | None, limit: int, pipeline: str | None = None
    ) -> Page[PipelineRun]:
        record = self.ctx.project(project, Permission.READ)
        return self.runs.page(record.id, cursor=cursor, limit=limit, pipeline=pipeline)

    def get(self, project: str, run_id: str) -> tuple[PipelineRun, Sequence[TaskRun]]:
        record = self.ctx.project(project, Permission.READ)
        run = self._load(record, run_id)
        return run, self.runs.tasks(run.id)

    def cancel(self, project: str, run_id: str) -> PipelineRun:
        """Ask the engine driving the run to stop it (editor or above)."""
        record = self.ctx.project(project, Permission.RUN)
        run = self._load(record, run_id)
        if not RunState(run.state).finished and not run.cancel_requested:
            run.cancel_requested = True
            self.ctx.flush(f"run {run_id!r}")
            self.ctx.audit("run.cancel", "run", run_id, project=record)
        return run

    def _load(self, project: Project, run_id: str) -> PipelineRun:
        run = self.runs.find(project.id, run_id)
        if run is None:
            raise NotFoundError(
                f"run {run_id!r} does not exist in project {project.name!r}",
                code="run/not_found",
                details={"project": project.name, "run": run_id},
            )
        return run
