"""Runs on Ray from a platform on Kubernetes: each one a KubeRay RayJob whose driver
drives it.

The controllers have no Ray of their own there (no ``MODELYARD_RAY_ADDRESS``), and a
local Ray in their pod would run users' code beside the control plane. So a run queued
with runtime ``ray`` is handed to a RayJob instead: an ephemeral Ray cluster (or the
long-lived ``ray_cluster``) whose driver, ``modelyard runs drive RUN --owner OWNER``,
drives the run there with the engine the controllers would use, recording every state
in the store as they would. The run executor passes its lease on the run to that owner,
renews it until the driver's engine holds it, and watches the RayJob. A RayJob the
cluster refuses, one that does not start its driver within the pending timeout (its
head's image cannot be pulled, its pods cannot be placed) and one that ends without the
run ending (its driver crashed, KubeRay failed it) fail what is unfinished of the run
with the reason; the RayJob is then deleted. A run cancelled before its driver started
is cancelled here. A RayJob of the same name left finished by an earlier go of the run
(the run was retried) is deleted before the new one is applied.

When the controllers stop, the RayJob goes on: the next run executor to take the run up
adopts the running RayJob under the same owner and watches it.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from modelyard.errors import ModelyardError
from modelyard.pipelines.engine import RunEngine
from modelyard.pipelines.runs import (
    RunLeasedError,
    RunNotFoundError,
    claim,
    hand_over,
    release,
    renew,
    request_cancel,
)
from modelyard.runtimes.kubernetes.failures import Phase, WorkloadState, rayjob_state
from modelyard.runtimes.kubernetes.namespaces import PLATFORM_NAMESPACE, project_namespace
from modelyard.runtimes.kubernetes.objects import LABEL_PREFIX, Manifest
from modelyard.runtimes.kubernetes.rayjobs import pipeline_rayjob
from modelyard.runtimes.kubernetes.runtime import PENDING_TIMEOUT, Cluster
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
        pending_timeout: How long a RayJob may take to start its driver (its cluster's
            pods scheduled, their images pulled) before the run fails.
        platform_namespace: Where the platform's controllers and API run.
    """

    def __init__(
        self,
        engine: RunEngine,
        settings: ClusterSettings,
        cluster: Cluster,
        *,
        poll_seconds: float = 5.0,
        pending_timeout: timedelta = PENDING_TIMEOUT,
        platform_namespace: str = PLATFORM_NAMESPACE,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.cluster = cluster
        self.poll_seconds = poll_seconds
        self.pending_timeout = pending_timeout
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
        try:
            if not self._start(obj, stop):
                return self._state(run_id)
        except Exception as exc:  # refused: no KubeRay, no permission, an invalid object
            logger.warning("run %s: the cluster refused its RayJob", run_id, exc_info=True)
            return self._end(obj, run_id, f"the cluster refused it: {exc}")
        logger.info("run %s: driven by RayJob %s", run_id, obj["metadata"]["name"])
        pending_since = time.monotonic()
        while not stop.wait(self.poll_seconds):
            try:
                current = self._get(obj)
            except Exception:  # the API server's hiccup: look again next time
                logger.warning("run %s: cannot read its RayJob", run_id, exc_info=True)
                continue
            job = rayjob_state(current) if current is not None else None
            run_state, cancel = self._run(run_id)  # read after the RayJob: it ends first
            if run_state.finished or job is None or job.finished:
                return self._end(obj, run_id, _ended(job))
            if job.state is Phase.PENDING:
                if cancel:  # no driver yet to stop the run: it is cancelled here
                    self._delete(obj)
                    release(sessions, run_id, owner)
                    request_cancel(sessions, run_id)
                    return self._state(run_id)
                if time.monotonic() - pending_since > self.pending_timeout.total_seconds():
                    why = ": ".join(part for part in (job.reason, job.message) if part)
                    return self._end(
                        obj,
                        run_id,
                        f"did not start within {self.pending_timeout}"
                        + (f": {why}" if why else ""),
                    )
            # Until the driver's engine holds it (under the same owner), the lease is ours.
            if not (renew(sessions, run_id, owner, lease) or claim(sessions, run_id, owner, lease)):
                return run_state  # another engine took the run over
        return self._state(run_id)  # stopping: the RayJob goes on, and so does the run

    def _start(self, obj: Manifest, stop: threading.Event) -> bool:
        """Apply the RayJob (and its project's namespace) once no RayJob of that name is
        left over from an earlier go of the run (a retried run's is deleted first); a
        running one is adopted as it is. False if stopped first."""
        meta = obj["metadata"]
        for namespace_object in project_namespace(
            self.settings,
            meta["labels"][LABEL_PREFIX + "project"],
            platform_namespace=self.platform_namespace,
        ):
            self.cluster.apply(namespace_object)
        while (current := self._get(obj)) is not None:
            if not (rayjob_state(current).finished or current["metadata"].get("deletionTimestamp")):
                return True  # this go's own RayJob, applied before the controllers restarted
            self._delete(obj)
            if stop.wait(self.poll_seconds):
                return False
        self.cluster.apply(obj)
        return True

    def _end(self, obj: Manifest, run_id: str, why: str) -> RunState:
        """The RayJob's end: what it left unfinished of the run fails with ``why``; the
        RayJob goes, and so does the lease."""
        meta = obj["metadata"]
        state = self.engine.fail_unfinished(
            run_id, RayJobEndedError(f"RayJob {meta['namespace']}/{meta['name']} {why}")
        )
        try:
            self._delete(obj)
        except Exception:  # the next go of the run deletes it before applying its own
            logger.warning("run %s: cannot delete its RayJob", run_id, exc_info=True)
        release(self.engine.sessions, run_id, driver_owner(run_id))
        return state

    def _get(self, obj: Manifest) -> Manifest | None:
        meta = obj["metadata"]
        return self.cluster.get(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])

    def _delete(self, obj: Manifest) -> None:
        meta = obj["metadata"]
        self.cluster.delete(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])

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
            run=run_id,
        )

    def _state(self, run_id: str) -> RunState:
        return self._run(run_id)[0]

    def _run(self, run_id: str) -> tuple[RunState, bool]:
        """The run's state, and whether it was asked to stop."""
        with self.engine.sessions() as session:
            run = session.get(PipelineRun, run_id)
            if run is None:
                return RunState.FAILED, False
            return RunState(run.state), run.cancel_requested


def driver_owner(run_id: str) -> str:
    """The lease holder the driver of a run's RayJob drives it as."""
    return f"rayjob:{run_id}"


def _ended(job: WorkloadState | None) -> str:
    """Why a RayJob left its run unfinished (unused when the run has finished)."""
    if job is None:
        return "was deleted before the run ended"
    why = ": ".join(part for part in (job.reason, job.message) if part)
    return f"ended ({job.state.value}) before the run did" + (f": {why}" if why else "")
