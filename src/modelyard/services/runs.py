"""Pipeline runs of a project: queue, read, retry and cancel them (the run executor
inside ``modelyard up`` does the running)."""

from __future__ import annotations

from collections.abc import Sequence

from modelyard.artifacts import from_settings
from modelyard.auth.roles import Permission
from modelyard.errors import NotFoundError
from modelyard.pipelines.logs import attempts_of, read_log
from modelyard.pipelines.runs import (
    NewRun,
    cancel_run,
    check_params,
    check_secrets,
    create_run,
    reset_for_retry,
)
from modelyard.runtimes import check_runtime
from modelyard.services.context import ServiceContext
from modelyard.specs.runs import RunCreate
from modelyard.store.models import PipelineRun, Project, TaskAttempt, TaskRun
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

    def create(self, project: str, spec: RunCreate) -> PipelineRun:
        """Queue a run (editor or above); refused before anything runs when a parameter,
        a secret or a pool is wrong."""
        record = self.ctx.project(project, Permission.RUN)
        check_runtime(spec.runtime)
        params = check_params(spec.spec, spec.params)
        check_secrets(self.ctx.session, record.id, record.name, spec.spec)
        run = create_run(
            self.ctx.session,
            record.id,
            spec.spec,
            params,
            NewRun(
                logical_date=spec.logical_date,
                created_by=self.ctx.principal.name,
                max_parallelism=spec.max_parallelism,
                runtime=spec.runtime,
            ),
        )
        self.ctx.audit(
            "run.create", "run", run.id, project=record, details={"pipeline": spec.spec.name}
        )
        return run

    def retry(self, project: str, run_id: str) -> tuple[PipelineRun, int]:
        """Queue a finished run's failed tasks and what follows them again (editor)."""
        record = self.ctx.project(project, Permission.RUN)
        run = self._load(record, run_id)
        reset = reset_for_retry(self.ctx.session, run.id)
        self.ctx.flush(f"run {run_id!r}")
        self.ctx.audit("run.retry", "run", run_id, project=record, details={"reset": reset})
        return run, reset

    def get(self, project: str, run_id: str) -> tuple[PipelineRun, Sequence[TaskRun]]:
        record = self.ctx.project(project, Permission.READ)
        run = self._load(record, run_id)
        return run, self.runs.tasks(run.id)

    def cancel(self, project: str, run_id: str) -> PipelineRun:
        """Ask the engine driving the run to stop it (editor or above)."""
        record = self.ctx.project(project, Permission.RUN)
        run = self._load(record, run_id)
        if not run.cancel_requested and cancel_run(self.ctx.session, run):
            self.ctx.flush(f"run {run_id!r}")
            self.ctx.audit("run.cancel", "run", run_id, project=record)
        return run

    def attempts(
        self, project: str, run_id: str, task: str | None = None
    ) -> Sequence[tuple[str, TaskAttempt]]:
        """The run's attempts, oldest first (viewer)."""
        record = self.ctx.project(project, Permission.READ)
        run = self._load(record, run_id)
        return attempts_of(self.ctx.session, run.id, task)

    def log(self, project: str, run_id: str, attempt_id: str, offset: int = 0) -> bytes:
        """What one attempt printed and logged, from ``offset`` on (viewer)."""
        record = self.ctx.project(project, Permission.READ)
        run = self._load(record, run_id)
        for _name, attempt in attempts_of(self.ctx.session, run.id):
            if attempt.id == attempt_id:
                return read_log(from_settings(self.ctx.settings), attempt, offset)
        raise NotFoundError(
            f"run {run_id!r} has no attempt {attempt_id!r}",
            code="attempt/not_found",
            details={"run": run_id, "attempt": attempt_id},
        )

    def _load(self, project: Project, run_id: str) -> PipelineRun:
        run = self.runs.find(project.id, run_id)
        if run is None:
            raise NotFoundError(
                f"run {run_id!r} does not exist in project {project.name!r}",
                code="run/not_found",
                details={"project": project.name, "run": run_id},
            )
        return run
