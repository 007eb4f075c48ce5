"""A project's schedules: apply, read, pause, unpause, trigger and delete them (the
scheduler inside ``modelyard up`` creates their runs)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from modelyard.auth.roles import Permission
from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.pipelines.runs import NewRun, check_params, check_pools, create_run, utcnow
from modelyard.services.context import ServiceContext, check_version
from modelyard.specs.pipelines import PipelineSpec
from modelyard.specs.schedules import ScheduleApply, ScheduleUpdate
from modelyard.store.models import PipelineRun, Project, Schedule


class ScheduleService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def list(self, project: str) -> tuple[Project, list[Schedule]]:
        record = self.ctx.project(project, Permission.READ)
        rows = self.ctx.session.scalars(
            select(Schedule).where(Schedule.project_id == record.id).order_by(Schedule.pipeline)
        )
        return record, list(rows)

    def get(self, project: str, pipeline: str) -> tuple[Project, Schedule]:
        record = self.ctx.project(project, Permission.READ)
        return record, self._load(record, pipeline)

    def apply(
        self, project: str, spec: ScheduleApply, *, expected_version: int | None = None
    ) -> tuple[Project, Schedule, bool]:
        """Create the pipeline's schedule, or replace its spec and timing; a new schedule
        is paused unless the spec says otherwise, an existing one keeps its pause state
        and the intervals it already ran. Returns whether it was created."""
        record = self.ctx.project(project, Permission.RUN)
        when = spec.schedule
        params = check_params(spec.spec, when.params)
        check_pools(self.ctx.session, spec.spec)
        schedule = self._find(record, spec.spec.name)
        created = schedule is None
        if schedule is None:
            schedule = Schedule(
                project_id=record.id,
                pipeline=spec.spec.name,
                paused=when.paused,
                created_by=self.ctx.principal.name,
                start_date=when.start_date or utcnow(),
            )
            self.ctx.session.add(schedule)
        else:
            check_version(schedule.version, expected_version, f"schedule {spec.spec.name!r}")
            if when.start_date is not None:
                schedule.start_date = when.start_date
        schedule.source = spec.spec.source
        schedule.spec = spec.spec.model_dump(mode="json")
        schedule.params = params
        schedule.cron = when.cron
        schedule.timezone = when.timezone
        schedule.end_date = when.end_date
        schedule.catchup = when.catchup
        schedule.max_active_runs = when.max_active_runs
        self.ctx.flush(f"schedule {spec.spec.name!r}")
        self.ctx.audit(
            "schedule.create" if created else "schedule.update",
            "schedule",
            spec.spec.name,
            project=record,
            details={"cron": when.cron, "timezone": when.timezone},
        )
        return record, schedule, created

    def update(
        self,
        project: str,
        pipeline: str,
        spec: ScheduleUpdate,
        *,
        expected_version: int | None = None,
    ) -> tuple[Project, Schedule]:
        record = self.ctx.project(project, Permission.RUN)
        schedule = self._load(record, pipeline)
        check_version(schedule.version, expected_version, f"schedule {pipeline!r}")
        changes = spec.model_dump(exclude_unset=True)
        if "params" in changes:
            changes["params"] = check_params(
                PipelineSpec.model_validate(schedule.spec), changes["params"]
            )
        for name, value in changes.items():
            setattr(schedule, name, value)
        self.ctx.flush(f"schedule {pipeline!r}")
        self.ctx.audit(
            "schedule.update",
            "schedule",
            pipeline,
            project=record,
            details={"changed": sorted(changes)},
        )
        return record, schedule

    def set_paused(self, project: str, pipeline: str, paused: bool) -> tuple[Project, Schedule]:
        record = self.ctx.project(project, Permission.RUN)
        schedule = self._load(record, pipeline)
        if schedule.paused != paused:
            schedule.paused = paused
            self.ctx.flush(f"schedule {pipeline!r}")
            self.ctx.audit(
                "schedule.pause" if paused else "schedule.unpause",
                "schedule",
                pipeline,
                project=record,
            )
        return record, schedule

    def trigger(
        self, project: str, pipeline: str, *, logical_date: datetime | None = None
    ) -> PipelineRun:
        """Queue a run now, outside the schedule's intervals (paused or not)."""
        if logical_date is not None and logical_date.tzinfo is None:
            raise InvalidInputError(
                "logical_date needs a time zone (e.g. 2025-01-01T00:00:00Z)",
                code="schedule/invalid_logical_date",
            )
        record = self.ctx.project(project, Permission.RUN)
        schedule = self._load(record, pipeline)
        run = create_run(
            self.ctx.session,
            record.id,
            PipelineSpec.model_validate(schedule.spec),
            dict(schedule.params),
            NewRun(
                logical_date=logical_date or utcnow(),
                trigger="manual",
                created_by=self.ctx.principal.name,
                schedule_id=schedule.id,
            ),
        )
        self.ctx.audit(
            "schedule.trigger", "schedule", pipeline, project=record, details={"run": run.id}
        )
        return run

    def delete(self, project: str, pipeline: str, *, expected_version: int | None = None) -> None:
        record = self.ctx.project(project, Permission.RUN)
        schedule = self._load(record, pipeline)
        check_version(schedule.version, expected_version, f"schedule {pipeline!r}")
        self.ctx.session.delete(schedule)
        self.ctx.flush(f"schedule {pipeline!r}")
        self.ctx.audit("schedule.delete", "schedule", pipeline, project=record)

    def _find(self, project: Project, pipeline: str) -> Schedule | None:
        return self.ctx.session.scalar(
            select(Schedule).where(Schedule.project_id == project.id, Schedule.pipeline == pipeline)
        )

    def _load(self, project: Project, pipeline: str) -> Schedule:
        schedule = self._find(project, pipeline)
        if schedule is None:
            raise NotFoundError(
                f"pipeline {pipeline!r} has no schedule in project {project.name!r}",
                code="schedule/not_found",
                details={"project": project.name, "pipeline": pipeline},
            )
        return schedule
