"""Training jobs in the metadata store: submitted, run on this machine's launcher, each
gang attempt recorded with its reason, cancelled through the store."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

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
from modelyard.store.models import TrainingAttempt, TrainingJob
from modelyard.training.launch import GangAttempt, GangLauncher, GangOutcome, JobResult

logger = logging.getLogger(__name__)

QUEUED = "queued"
RUNNING = "running"


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


def request_cancel(sessions: sessionmaker[Session], job_id: str) -> str:
    """Stop a job (see :func:`cancel`); returns its state afterwards."""
    with transaction(sessions) as session:
        job = find(session, job_id)
        cancel(job)
        return job.state


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
) -> JobResult:
    """Run a job's gang on this machine until it ends, recording every attempt.

    When ``stop`` is set (the executor is stopping), the gang is stopped and the job is
    queued again, to be resumed from its checkpoints; a cancellation ends it.
    """
    with transaction(sessions) as session:
        job = find(session, job_id)
        spec = TrainingJobSpec.model_validate(job.spec)
        workdir = Path(job.workdir)
        job.state = RUNNING
        job.started_at = datetime.now(UTC)
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
        result = GangLauncher(spec, workdir, env=env, cancel=cancel, on_attempt=record).run()
    finally:
        cancel.set()  # ends the watcher
        watcher.join()
    with transaction(sessions) as session:
        job = find(session, job_id)
        job.owner = None
        if stop is not None and stop.is_set() and not job.cancel_requested:
            job.state = QUEUED
            job.reason = "queued again: the executor running it stopped"
            return result
        job.state = result.outcome.value
        job.reason = result.reason
        job.result = result.result
        job.finished_at = datetime.now(UTC)
    return result


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
