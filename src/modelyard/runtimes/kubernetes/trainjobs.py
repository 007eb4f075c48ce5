"""Training jobs on Kubernetes: the gang is a Kubeflow TrainJob (or PyTorchJob), applied
with server-side apply and watched until it ends; its end is the job's one attempt.

Restarts are the operator's on the cluster (a PyTorchJob restarts its pods by exit code
up to the failure policy's backoff limit; a TrainJob's JobSet by its runtime's policy),
so modelyard records the whole object's life as one attempt with the operator's reason.
Secrets reach the workers by reference to the project's Kubernetes Secret; what else
the job executor hands the gang (the MLflow run, the tracking server) goes in as plain
variables.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from modelyard.runtimes.kubernetes.failures import (
    Phase,
    WorkloadState,
    pytorchjob_state,
    trainjob_state,
)
from modelyard.runtimes.kubernetes.namespaces import PLATFORM_NAMESPACE, project_namespace
from modelyard.runtimes.kubernetes.objects import Manifest
from modelyard.runtimes.kubernetes.runtime import Cluster
from modelyard.runtimes.kubernetes.settings import ClusterSettings
from modelyard.runtimes.kubernetes.training import render_training_job
from modelyard.specs.training import TrainingJobSpec
from modelyard.training.launch import GangAttempt, GangOutcome, JobResult

_STATE_OF: dict[str, Callable[[Manifest], WorkloadState]] = {
    "TrainJob": trainjob_state,
    "PyTorchJob": pytorchjob_state,
}


class KubernetesGangLauncher:
    """Runs one training job as a TrainJob or PyTorchJob (the job executor's launcher
    for ``runtime: kubernetes``).

    Args:
        spec: The job.
        workdir: The job's folder (unused: the cluster keeps the pods' files).
        env: Variables for every worker; those named in ``spec.secrets`` are not copied,
            the workers read them from the project's Secret.
        cancel: Set to stop the job (its object is deleted).
        on_attempt: Called with the attempt when it ends.
        settings: Where and how pods run.
        cluster: The API server.
        project: The job's project (its namespace).
        poll_seconds: How often the object is looked at.
        platform_namespace: Where the platform's controllers and API run.
    """

    def __init__(
        self,
        spec: TrainingJobSpec,
        workdir: Path,
        *,
        env: dict[str, str] | None = None,
        cancel: threading.Event | None = None,
        on_attempt: Callable[[GangAttempt], None] | None = None,
        settings: ClusterSettings,
        cluster: Cluster,
        project: str,
        poll_seconds: float = 5.0,
        platform_namespace: str = PLATFORM_NAMESPACE,
    ) -> None:
        del workdir
        self.platform_namespace = platform_namespace
        plain = {k: v for k, v in (env or {}).items() if k not in spec.secrets}
        self.spec = spec.model_copy(update={"env": {**spec.env, **plain}})
        self.cancel = cancel or threading.Event()
        self.on_attempt = on_attempt
        self.settings = settings
        self.cluster = cluster
        self.project = project
        self.poll_seconds = poll_seconds

    def run(self) -> JobResult:
        attempt = GangAttempt(number=1, started_at=datetime.now(UTC))
        (obj,) = render_training_job(self.spec, self.settings, self.project)
        for namespace_object in project_namespace(
            self.settings, self.project, platform_namespace=self.platform_namespace
        ):
            self.cluster.apply(namespace_object)
        self.cluster.apply(obj)
        outcome, reason = self._watch(obj)
        attempt.finished_at = datetime.now(UTC)
        attempt.outcome, attempt.reason = outcome, reason
        if self.on_attempt is not None:
            self.on_attempt(attempt)
        return JobResult(outcome=outcome, attempts=[attempt], reason=reason)

    def _watch(self, obj: Manifest) -> tuple[GangOutcome, str]:
        kind, meta = obj["kind"], obj["metadata"]
        state_of = _STATE_OF[kind]
        described = f"{kind} {meta['namespace']}/{meta['name']}"
        while True:
            if self.cancel.wait(self.poll_seconds):
                self.cluster.delete(obj["apiVersion"], kind, meta["namespace"], meta["name"])
                return GangOutcome.CANCELLED, f"cancelled: {described} deleted"
            current = self.cluster.get(obj["apiVersion"], kind, meta["namespace"], meta["name"])
            if current is None:
                return GangOutcome.FAILED, f"{described} was deleted from the cluster"
            state = state_of(current)
            if state.state is Phase.SUCCEEDED:
                return GangOutcome.SUCCEEDED, f"{described} succeeded"
            if state.state is Phase.FAILED:
                outcome = GangOutcome.TIMED_OUT if state.timed_out else GangOutcome.FAILED
                why = ": ".join(part for part in (state.reason, state.message) if part)
                return outcome, f"{described} failed: {why or 'no reason given'}"
