"""The job executor inside ``modelyard up``: runs queued training jobs on this machine.

A job is claimed by a conditional update (queued -> running, with this executor as its
owner), so two executors never run one job. Stopping the executor stops the running
gang and puts the job back in the queue: the next executor starts it again, and the
training resumes from its checkpoints. A job left running by an executor whose process
on this machine has exited is put back in the queue the same way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from modelyard.config import Settings
from modelyard.pipelines.runs import new_owner, owner_gone
from modelyard.polling import Poller
from modelyard.specs.training import TrainingJobSpec
from modelyard.store.db import transaction
from modelyard.store.models import Project, TrainingJob
from modelyard.training import jobs
from modelyard.training.launch import GangLauncher
from modelyard.training.launchers import launcher_for
from modelyard.training.tracking import TrackingConfig

logger = logging.getLogger(__name__)

SecretLookup = Callable[[str, tuple[str, ...]], dict[str, str]]


class JobExecutor(Poller):
    """Claims and runs queued training jobs, ``capacity`` at once (a gang usually wants
    the whole machine: the default is one).

    Args:
        sessions: The metadata store.
        secrets: Looks up a project's secret values by name, for injection.
        capacity: Jobs run at once.
        poll_seconds: How often the store is asked for jobs.
        tracking_config: Where jobs' MLflow runs go; None runs them untracked.
        settings: Where jobs of other runtimes than ``local`` run (Ray's address, the
            Kubernetes values); None runs every job here.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        secrets: SecretLookup,
        capacity: int = 1,
        poll_seconds: float = 1.0,
        tracking_config: TrackingConfig | None = None,
        settings: Settings | None = None,
    ) -> None:
        super().__init__("modelyard-jobs", poll_seconds, capacity)
        self.settings = settings
        self.sessions = sessions
        self.secrets = secrets
        self.capacity = capacity
        self.tracking_config = tracking_config
        self.owner = new_owner()
        self._active: set[str] = set()
        self._lock = threading.Lock()

    def poll(self) -> list[str]:
        """Requeue orphaned jobs, then claim what there is room for; returns their ids."""
        self._requeue_orphans()
        with self._lock:
            free = self.capacity - len(self._active)
        if free <= 0 or self.stopping.is_set():
            return []
        with self.sessions() as session:
            candidates = list(
                session.scalars(
                    select(TrainingJob.id)
                    .where(TrainingJob.state == jobs.QUEUED)
                    .order_by(TrainingJob.id)
                    .limit(free)
                )
            )
        claimed = []
        for job_id in candidates:
            if not self._claim(job_id):
                continue
            with self._lock:
                self._active.add(job_id)
            assert self.threads is not None
            self.threads.submit(self._run, job_id)
            claimed.append(job_id)
        return claimed

    def _claim(self, job_id: str) -> bool:
        with transaction(self.sessions) as session:
            result = session.execute(
                update(TrainingJob)
                .where(TrainingJob.id == job_id, TrainingJob.state == jobs.QUEUED)
                .values(state=jobs.RUNNING, owner=self.owner)
                .execution_options(synchronize_session=False)
            )
            return bool(getattr(result, "rowcount", 0))

    def _requeue_orphans(self) -> None:
        with transaction(self.sessions) as session:
            running = session.scalars(
                select(TrainingJob).where(
                    TrainingJob.state == jobs.RUNNING,
                    TrainingJob.owner.is_not(None),
                    TrainingJob.owner != self.owner,
                )
            )
            for job in running:
                if job.owner is not None and owner_gone(job.owner):
                    logger.info("job %s: its executor is gone; queued again", job.id)
                    job.state = jobs.QUEUED
                    job.owner = None
                    job.reason = "queued again: the executor running it stopped"

    def _run(self, job_id: str) -> None:
        try:
            with self.sessions() as session:
                job = jobs.find(session, job_id)
                spec = TrainingJobSpec.model_validate(job.spec)
                project_id = job.project_id
                project = session.get(Project, project_id)
                project_name = project.name if project is not None else project_id
            env = self.secrets(project_id, spec.secrets)
            launcher = (
                launcher_for(spec.runtime, self.settings, project_name)
                if self.settings is not None
                else GangLauncher
            )
            result = jobs.run_here(
                self.sessions,
                job_id,
                env=env,
                stop=self.stopping,
                tracking_config=self.tracking_config,
                launcher=launcher,
            )
            logger.info("job %s is %s: %s", job_id, result.outcome.value, result.reason)
        except Exception:
            logger.exception("job %s: the executor failed running it", job_id)
        finally:
            with self._lock:
                self._active.discard(job_id)
