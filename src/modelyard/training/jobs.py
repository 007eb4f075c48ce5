"""Training jobs in the metadata store: submitted, run on this machine's launcher, each
gang attempt recorded with its reason, cancelled through the store."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelyard.errors import NotFoundError
from modelyard.specs.training import (
    TrainingAttemptOut,
    TrainingJobDetail,
    TrainingJobOut,
    TrainingJobSpec,
)
from modelyard.store.db import transaction
from modelyard.store.models import Project, TrainingAttempt, TrainingJob
from modelyard.training import tracking
from modelyard.training.launch import GangAttempt, GangLauncher, GangOutcome, JobResult
from modelyard.training.tracking import TrackingConfig

logger = logging.getLogger(__name__)

QUEUED = "queued"
RUNNING = "running"


class Launcher(Protocol):
    """Runs a job's gang to its end: restarts, attempts and outcome."""

    def run(self) -> JobResult: ...


# Makes the launcher of a job's gang: (spec, workdir, env=, cancel=, on_attempt=), as
# GangLauncher (this machine), modelyard.runtimes.ray.train.RayGangLauncher or
# modelyard.runtimes.kubernetes.trainjobs.KubernetesGangLauncher.
LauncherFactory = Callable[..., Launcher]


class JobNotFoundError(NotFoundError):
    default_code = "job/not_found"


def submit(
    session: Session, project_id: str, spec: TrainingJobSpec, jobs_dir: Path, created_by: str
) -> TrainingJob:
    """Record a queued job; its folder (logs, reports, checkpoints) is under ``jobs_dir``."""
    job = TrainingJob(
        project_id=project_id,
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        state=QUEUED,
        created_by=created_by,
    )
    session.add(job)
    session.flush()
    job.workdir = str(jobs_dir / job.id)
    return job


def find(session: Session, job_id: str) -> TrainingJob:
    job = session.get(TrainingJob, job_id)
    if job is None:
        raise JobNotFoundError(f"training job {job_id!r} does not exist")
    return job


def attempts_of(session: Session, job_id: str) -> list[TrainingAttempt]:
    return list(
        session.scalars(
            select(TrainingAttempt)
            .where(TrainingAttempt.job_id == job_id)
            .order_by(TrainingAttempt.number)
        )
    )


def request_cancel(
    sessions: sessionmaker[Session], job_id: str, tracking_config: TrackingConfig | None = None
) -> str:
    """Stop a job (see :func:`cancel`); returns its state afterwards."""
    with transaction(sessions) as session:
        job = find(session, job_id)
        if cancel(job) and tracking_config is not None:
            end_cancelled_run(tracking_config, job)
        return job.state


def end_cancelled_run(config: TrackingConfig, job: TrainingJob) -> None:
    """A job cancelled while queued may have an MLflow run already (it ran, and was
    handed back when its executor stopped): the run ends as KILLED with it."""
    if job.state == GangOutcome.CANCELLED.value and job.mlflow_run_id:
        _end_run(config, job.mlflow_run_id, "KILLED")


def cancel(job: TrainingJob) -> bool:
    """A queued job is cancelled at once; a running one is asked to stop, and whoever
    runs it stops its gang. Returns whether anything changed."""
    if job.state == QUEUED:
        job.state = GangOutcome.CANCELLED.value
        job.reason = "cancelled before it started"
        return True
    if job.state == RUNNING and not job.cancel_requested:
        job.cancel_requested = True
        return True
    return False


def run_here(
    sessions: sessionmaker[Session],
    job_id: str,
    env: dict[str, str] | None = None,
    on_attempt: Callable[[GangAttempt], None] | None = None,
    stop: threading.Event | None = None,
    tracking_config: TrackingConfig | None = None,
    launcher: LauncherFactory = GangLauncher,
) -> JobResult:
    """Run a job's gang on this machine (or on the launcher's, e.g. Ray Train) until it
    ends, recording every attempt.

    With ``tracking_config``, the job gets an MLflow run in its project's experiment
    (the same run again when it resumes), handed to the workers as ``MLFLOW_RUN_ID``.
    When ``stop`` is set (the executor is stopping), the gang is stopped and the job is
    queued again, to be resumed from its checkpoints; a cancellation ends it.
    """
    with transaction(sessions) as session:
        job = find(session, job_id)
        spec = TrainingJobSpec.model_validate(job.spec)
        workdir = Path(job.workdir)
        job.state = RUNNING
        job.started_at = datetime.now(UTC)
        project = session.get(Project, job.project_id)
        previous_run = job.mlflow_run_id
    run_id = None
    if tracking_config is not None and project is not None:
        run_id = _open_run(tracking_config, project.name, job_id, spec, previous_run)
    if run_id is not None and tracking_config is not None:
        env = {**(env or {}), **tracking_config.env(), "MLFLOW_RUN_ID": run_id}
        with transaction(sessions) as session:
            find(session, job_id).mlflow_run_id = run_id
    cancel = threading.Event()
    watcher = threading.Thread(
        target=_watch_cancel, args=(sessions, job_id, cancel, stop), daemon=True
    )

    def record(attempt: GangAttempt) -> None:
        with transaction(sessions) as session:
            session.add(
                TrainingAttempt(
                    job_id=job_id,
                    number=attempt.number,
                    outcome=attempt.outcome.value if attempt.outcome else "",
                    reason=attempt.reason,
                    retried=attempt.retried,
                    exits=[
                        {
                            "rank": e.rank,
                            "exit_code": e.exit_code,
                            "error_type": e.error_type,
                            "message": e.message,
                        }
                        for e in attempt.exits
                    ],
                    started_at=attempt.started_at,
                    finished_at=attempt.finished_at,
                )
            )
        if on_attempt is not None:
            on_attempt(attempt)

    watcher.start()
    try:
        result = launcher(spec, workdir, env=env, cancel=cancel, on_attempt=record).run()
    except BaseException:
        if run_id is not None and tracking_config is not None:
            _end_run(tracking_config, run_id, "FAILED")
        raise
    finally:
        cancel.set()  # ends the watcher
        watcher.join()
    with transaction(sessions) as session:
        job = find(session, job_id)
        job.owner = None
        requeued = stop is not None and stop.is_set() and not job.cancel_requested
        if requeued:
            job.state = QUEUED
            job.reason = "queued again: the executor running it stopped"
        else:
            job.state = result.outcome.value
            job.reason = result.reason
            job.result = result.result
            job.finished_at = datetime.now(UTC)
    if run_id is not None and tracking_config is not None and not requeued:
        _close_run(tracking_config, run_id, result)
    return result


_RUN_STATUS = {GangOutcome.SUCCEEDED: "FINISHED", GangOutcome.CANCELLED: "KILLED"}


def _open_run(
    config: TrackingConfig, project: str, job_id: str, spec: TrainingJobSpec, run_id: str | None
) -> str | None:
    """The job's MLflow run, opened (or resumed); None when tracking is unavailable: the
    job runs untracked rather than not at all."""
    if not tracking.mlflow_available():
        return None
    tags = {tracking.PROJECT: project, tracking.JOB: job_id}
    try:
        if spec.is_script:  # a function's code is fingerprinted by its worker, which imports it
            tags.update(tracking.code_tags(spec.entrypoint))
        return tracking.open_run(config, project, spec.name, tags, run_id=run_id)
    except Exception:
        logger.warning(
            "job %s: its MLflow run could not be opened; untracked", job_id, exc_info=True
        )
        return None


def _close_run(config: TrackingConfig, run_id: str, result: JobResult) -> None:
    try:
        client = config.client()
        client.set_tag(run_id, "modelyard.restarts", str(max(0, len(result.attempts) - 1)))
        client.set_tag(run_id, "modelyard.outcome", f"{result.outcome.value}: {result.reason}")
    except Exception:
        logger.warning("could not tag MLflow run %s", run_id, exc_info=True)
    _end_run(config, run_id, _RUN_STATUS.get(result.outcome, "FAILED"))


def _end_run(config: TrackingConfig, run_id: str, status: str) -> None:
    try:
        tracking.close_run(config, run_id, status)
    except Exception:
        logger.warning("could not end MLflow run %s", run_id, exc_info=True)


def _watch_cancel(
    sessions: sessionmaker[Session],
    job_id: str,
    cancel: threading.Event,
    stop: threading.Event | None,
) -> None:
    while not cancel.wait(0.2):
        if stop is not None and stop.is_set():
            cancel.set()
            return
        try:
            with sessions() as session:
                if session.scalar(
                    select(TrainingJob.cancel_requested).where(TrainingJob.id == job_id)
                ):
                    cancel.set()
        except Exception:  # the store is briefly unavailable: look again
            logger.warning("could not read job %s's cancellation", job_id, exc_info=True)


def job_out(job: TrainingJob) -> TrainingJobOut:
    workers = job.spec.get("workers", 1)
    return TrainingJobOut(
        id=job.id,
        name=job.name,
        state=job.state,
        reason=job.reason,
        workers=workers if isinstance(workers, int) else 1,
        result=job.result,
        mlflow_run_id=job.mlflow_run_id,
        created_by=job.created_by,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def job_detail(job: TrainingJob, attempts: Sequence[TrainingAttempt]) -> TrainingJobDetail:
    return TrainingJobDetail(
        **job_out(job).model_dump(),
        attempts=[TrainingAttemptOut.model_validate(a) for a in attempts],
    )
