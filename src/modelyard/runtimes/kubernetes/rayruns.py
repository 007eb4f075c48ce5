"""Runs on Ray from a platform on Kubernetes: each one a KubeRay RayJob whose driver
drives it.

The controllers have no Ray of their own there (no ``MODELYARD_RAY_ADDRESS``), and a
local Ray in their pod would run users' code beside the control plane. So a run queued
with runtime ``ray`` is handed to a RayJob instead: an ephemeral Ray cluster (or the
long-lived ``ray_cluster``) whose driver, ``modelyard runs drive RUN --owner OWNER``,
drives the run there with the engine the controllers would use, recording every state
in the store as they would. The run executor passes its lease on the run to that owner,
renews it until the driver's engine holds it, and watches the RayJob. A RayJob that ends
without the run ending (its image cannot be pulled, its driver crashed, KubeRay failed
it) fails what is unfinished of the run with the RayJob's reason; the RayJob is then
deleted, so a retried run gets a new one.

When the controllers stop, the RayJob goes on: the next run executor takes the run up
again under the same owner, applies the same RayJob (a no-op) and watches it.
"""

from __future__ import annotations

import logging
import threading

from modelyard.errors import ModelyardError
from modelyard.pipelines.engine import RunEngine
from modelyard.pipelines.runs import (
    RunLeasedError,
    RunNotFoundError,
    claim,
    hand_over,
    release,
    renew,
)
from modelyard.runtimes.kubernetes.failures import WorkloadState, rayjob_state
from modelyard.runtimes.kubernetes.namespaces import PLATFORM_NAMESPACE, project_namespace
from modelyard.runtimes.kubernetes.objects import LABEL_PREFIX, Manifest, label_value
from modelyard.runtimes.kubernetes.rayjobs import pipeline_rayjob
from modelyard.runtimes.kubernetes.runtime import Cluster
from modelyard.runtimes.kubernetes.settings import ClusterSettings
from modelyard.specs.pipelines import PipelineSpec
from modelyard.specs.runs import RunState
from modelyard.store.models import PipelineRun, Project

logger = logging.getLogger(__name__)

RAY = "ray"


class RayJobEndedError(ModelyardError):
    """The RayJob that drove a run ended before the run did."""

    default_code = "run/rayjob_ended"


class RayJobRuns:
    """The run executor's delegate for runs with runtime ``ray`` (see the module).

    Args:
        engine: The executor's engine: its lease is handed over, and it fails what a
            RayJob left unfinished.
        settings: Where and how pods run.
        cluster: The API server.
        poll_seconds: How often the RayJob is looked at (and the lease renewed).
        platform_namespace: Where the platform's controllers and API run.
    """

    def __init__(
        self,
        engine: RunEngine,
        settings: ClusterSettings,
        cluster: Cluster,
        *,
        poll_seconds: float = 5.0,
        platform_namespace: str = PLATFORM_NAMESPACE,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.cluster = cluster
        self.poll_seconds = poll_seconds
        self.platform_namespace = platform_namespace

    def handles(self, run_id: str) -> bool:
        with self.engine.sessions() as session:
            run = session.get(PipelineRun, run_id)
            return run is not None and run.runtime == RAY

    def drive(self, run_id: str, stop: threading.Event) -> RunState:
        sessions, lease = self.engine.sessions, self.engine.settings.lease
        owner = driver_owner(run_id)
        if not hand_over(sessions, run_id, self.engine.owner, owner, lease):
            raise RunLeasedError(
                f"run {run_id!r} is being driven by another engine", details={"run": run_id}
            )
        obj = self.rayjob(run_id)
        meta = obj["metadata"]
        described = f"RayJob {meta['namespace']}/{meta['name']}"
        for namespace_object in project_namespace(
            self.settings,
            meta["labels"][LABEL_PREFIX + "project"],
            platform_namespace=self.platform_namespace,
        ):
            self.cluster.apply(namespace_object)
        self.cluster.apply(obj)
        logger.info("run %s: driven by %s", run_id, described)
        while not stop.wait(self.poll_seconds):
            run_state = self._state(run_id)
            current = self.cluster.get(obj["apiVersion"], "RayJob", meta["namespace"], meta["name"])
            job = rayjob_state(current) if current is not None else None
            if run_state.finished or job is None or job.finished:
                if not run_state.finished:
                    run_state = self.engine.fail_unfinished(
                        run_id, RayJobEndedError(f"{described} {_ended(job)}")
                    )
                self.cluster.delete(obj["apiVersion"], "RayJob", meta["namespace"], meta["name"])
                release(sessions, run_id, owner)
                return run_state
            # Until the driver's engine holds it (under the same owner), the lease is ours.
            if not (renew(sessions, run_id, owner, lease) or claim(sessions, run_id, owner, lease)):
                return run_state  # another engine took the run over
        return self._state(run_id)  # stopping: the RayJob goes on, and so does the run

    def rayjob(self, run_id: str) -> Manifest:
        """The RayJob that drives ``run_id``."""
        with self.engine.sessions() as session:
            run = session.get(PipelineRun, run_id)
            if run is None:
                raise RunNotFoundError(f"run {run_id!r} does not exist")
            project = session.get(Project, run.project_id)
            spec = PipelineSpec.model_validate(run.spec)
            project_name = project.name if project is not None else run.project_id
        return pipeline_rayjob(
            self.settings,
            project=project_name,
            job_name=f"run-{run_id}",
            spec=spec,
            # One warm local worker: the run's tasks go to the Ray cluster.
            entrypoint=[
                *("modelyard", "runs", "drive", run_id),
                *("--owner", driver_owner(run_id), "--workers", "1"),
            ],
            labels_extra={LABEL_PREFIX + "run": label_value(run_id)},
        )

    def _state(self, run_id: str) -> RunState:
        with self.engine.sessions() as session:
            run = session.get(PipelineRun, run_id)
            return RunState(run.state) if run is not None else RunState.FAILED


def driver_owner(run_id: str) -> str:
    """The lease holder the driver of a run's RayJob drives it as."""
    return f"rayjob:{run_id}"


def _ended(job: WorkloadState | None) -> str:
    if job is None:
        return "was deleted before the run ended"
    why = ": ".join(part for part in (job.reason, job.message) if part)
    return f"ended ({job.state.value}) before the run did" + (f": {why}" if why else "")
