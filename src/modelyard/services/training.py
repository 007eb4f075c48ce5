"""A project's training jobs: submit, read, cancel, read logs (the job executor inside
``modelyard up`` runs them)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select

from modelyard.auth.roles import Permission
from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.pipelines.runs import missing_secrets
from modelyard.services.context import ServiceContext
from modelyard.specs.training import TrainingJobSpec
from modelyard.store.models import Project, TrainingAttempt, TrainingJob
from modelyard.training import jobs
from modelyard.training.tracking import TrackingConfig


class TrainingService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def submit(self, project: str, spec: TrainingJobSpec) -> TrainingJob:
        """Queue a job (editor or above); refused at once when a secret is missing."""
        record = self.ctx.project(project, Permission.RUN)
        missing = missing_secrets(self.ctx.session, record.id, spec.secrets)
        if missing:
            raise InvalidInputError(
                f"job {spec.name!r} needs secret(s) {missing}, which project "
                f"{record.name!r} does not have",
                code="job/missing_secret",
                details={"secrets": missing},
            )
        job = jobs.submit(
            self.ctx.session,
            record.id,
            spec,
            self.ctx.settings.home / "jobs",
            self.ctx.principal.name,
        )
        self.ctx.audit("job.submit", "job", job.id, project=record, details={"name": spec.name})
        return job

    def list(self, project: str, limit: int = 50) -> Sequence[TrainingJob]:
        record = self.ctx.project(project, Permission.READ)
        return list(
            self.ctx.session.scalars(
                select(TrainingJob)
                .where(TrainingJob.project_id == record.id)
                .order_by(TrainingJob.id.desc())
                .limit(limit)
            )
        )

    def get(self, project: str, job_id: str) -> tuple[TrainingJob, Sequence[TrainingAttempt]]:
        record = self.ctx.project(project, Permission.READ)
        job = self._load(record, job_id)
        return job, jobs.attempts_of(self.ctx.session, job.id)

    def cancel(self, project: str, job_id: str) -> TrainingJob:
        """Stop a job: a queued one at once, a running one through its executor."""
        record = self.ctx.project(project, Permission.RUN)
        job = self._load(record, job_id)
        if jobs.cancel(job):
            self.ctx.flush(f"job {job_id!r}")
            self.ctx.audit("job.cancel", "job", job_id, project=record)
            jobs.end_cancelled_run(TrackingConfig.from_settings(self.ctx.settings), job)
        return job

    def log(self, project: str, job_id: str, attempt: int, rank: int) -> bytes:
        """What one worker of one attempt printed (viewer)."""
        record = self.ctx.project(project, Permission.READ)
        job = self._load(record, job_id)
        path = Path(job.workdir) / f"attempt-{attempt}" / f"rank-{rank}.log"
        if not path.is_file():
            raise NotFoundError(
                f"job {job_id!r} has no log for attempt {attempt}, rank {rank}",
                code="job/log_not_found",
            )
        return path.read_bytes()

    def _load(self, project: Project, job_id: str) -> TrainingJob:
        job = self.ctx.session.get(TrainingJob, job_id)
        if job is None or job.project_id != project.id:
            raise NotFoundError(
                f"job {job_id!r} does not exist in project {project.name!r}",
                code="job/not_found",
                details={"project": project.name, "job": job_id},
            )
        return job
