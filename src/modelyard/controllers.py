"""The controllers that run inside ``modelyard up`` beside the API: the scheduler, which
creates the runs schedules owe, the run executor, which drives queued runs on the runtime
each names (this machine's warm worker pool, or Ray; on Kubernetes without a Ray
address, a RayJob per Ray run), the job executor, which runs queued
training jobs, and the deployment controller, which runs deployments' routers and
replicas (as processes here, or as Kubernetes objects when ``MODELYARD_KUBERNETES_VALUES``
places workloads on the cluster the controllers run in). All keep their state in the
store and are safe to stop and start at any moment.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack

from sqlalchemy.orm import Session, sessionmaker

from modelyard.config import Settings
from modelyard.pipelines.executor import RunExecutor
from modelyard.pipelines.local import local_engine, secret_lookup
from modelyard.pipelines.scheduling import Scheduler
from modelyard.runtimes.kubernetes.deployments import ClusterDeploymentController
from modelyard.runtimes.kubernetes.rayruns import RayJobRuns
from modelyard.runtimes.kubernetes.runtime import KubeCluster, load_cluster_settings
from modelyard.runtimes.kubernetes.settings import ClusterSettings
from modelyard.serving.controller import DeploymentController
from modelyard.training.executor import JobExecutor
from modelyard.training.tracking import TrackingConfig

logger = logging.getLogger(__name__)


class ControlPlane:
    """Starts and stops the controllers.

    Args:
        settings: Where the store and artifacts are, how many workers and runs.
        sessions: The metadata store (shared with the API).
    """

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.scheduler = Scheduler(sessions, poll_seconds=settings.scheduler_poll_seconds)
        self.executor: RunExecutor | None = None
        self.jobs: JobExecutor | None = None
        self.deployments: DeploymentController | ClusterDeploymentController
        self.cluster: tuple[ClusterSettings, KubeCluster] | None = None
        if settings.kubernetes_values is not None:  # on a cluster: deployments are objects
            self.cluster = (
                load_cluster_settings(settings.kubernetes_values),
                KubeCluster.from_environment(),
            )
            self.deployments = ClusterDeploymentController(
                sessions, *self.cluster, poll_seconds=settings.deployment_poll_seconds
            )
        else:
            self.deployments = DeploymentController(
                settings,
                sessions,
                poll_seconds=settings.deployment_poll_seconds,
                stop_processes_on_exit=settings.stop_deployments_on_exit,
            )
        self._stack = ExitStack()

    def start(self) -> None:
        engine = self._stack.enter_context(
            local_engine(self.settings, self.sessions, self.settings.workers)
        )
        delegate = None
        if self.cluster is not None and self.settings.ray_address is None:
            # No Ray beside the control plane: each Ray run is a RayJob of its own.
            delegate = RayJobRuns(
                engine, *self.cluster, platform_namespace=self.settings.platform_namespace
            )
        self.executor = RunExecutor(
            engine,
            capacity=self.settings.max_active_runs,
            poll_seconds=self.settings.executor_poll_seconds,
            delegate=delegate,
        )
        self.executor.start()
        self.jobs = JobExecutor(
            self.sessions,
            secret_lookup(self.settings, self.sessions),
            capacity=self.settings.max_active_jobs,
            poll_seconds=self.settings.executor_poll_seconds,
            tracking_config=TrackingConfig.from_settings(self.settings),
            settings=self.settings,
        )
        self.jobs.start()
        self.scheduler.start()
        self.deployments.start()
        logger.info("controllers started: scheduler, run executor (%s)", engine.owner)

    def stop(self) -> None:
        """Stop creating runs, hand running ones back, then stop the workers."""
        self.scheduler.stop()
        self.deployments.stop()
        if self.executor is not None:
            self.executor.stop()
        if self.jobs is not None:
            self.jobs.stop()
        self._stack.close()
        logger.info("controllers stopped")
