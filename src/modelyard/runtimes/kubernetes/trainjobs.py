"""Training jobs on Kubernetes: each attempt of the gang is one Kubeflow TrainJob (or
PyTorchJob), applied with server-side apply and watched until it ends.

Restarts are modelyard's, as on this machine and on Ray: the operator restarts nothing,
and when a pod of the attempt fails its object is deleted (the whole gang stops) and the
job's ``FailurePolicy`` judges the pod's end. What the cluster saw settles it where it
can (an out-of-memory kill, an eviction, a preemption, a lost node or a device fault is
retried; an image that cannot be pulled or a missing Secret key is not, see
``failures.cluster_verdict``); the container's own exit is judged as a local worker's:
by its exit code and, from the report the worker leaves in its termination message, the
exception it raised. The next attempt is a new object that resumes from the latest
checkpoint on the shared checkpoint volume. Objects are named ``train-<job>-<id>`` (the
last characters of the job's id, from its folder's name), ``-<n>`` for attempt n > 1,
so that jobs of one name never share one. A call to the API server that fails while an
attempt is watched is tried again at the next look.

Secrets reach the workers by reference to the project's Kubernetes Secret; what else the
job executor hands the gang (the MLflow run, the tracking server) goes in as plain
variables.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from modelyard.runtimes.kubernetes.failures import (
    ERROR_TYPE_PREFIX,
    FailureReason,
    Phase,
    PodFailure,
    WorkloadState,
    cluster_verdict,
    pod_failure,
    pytorchjob_state,
    termination_message,
    trainjob_state,
)
from modelyard.runtimes.kubernetes.namespaces import PLATFORM_NAMESPACE, project_namespace
from modelyard.runtimes.kubernetes.objects import Manifest
from modelyard.runtimes.kubernetes.runtime import PENDING_TIMEOUT, Cluster
from modelyard.runtimes.kubernetes.settings import ClusterSettings
from modelyard.runtimes.kubernetes.training import TRAINER_NODE, render_training_job
from modelyard.specs.training import TrainingJobSpec
from modelyard.training.launch import (
    GangAttempt,
    GangLauncher,
    GangOutcome,
    WorkerExit,
    describe_exit,
)

logger = logging.getLogger(__name__)

_STATE_OF: dict[str, Callable[[Manifest], WorkloadState]] = {
    "TrainJob": trainjob_state,
    "PyTorchJob": pytorchjob_state,
}
# The label each operator puts on the pods of one object: a TrainJob's JobSet is named
# after it.
_POD_LABEL = {
    "TrainJob": "jobset.sigs.k8s.io/jobset-name",
    "PyTorchJob": "training.kubeflow.org/job-name",
}
# A TrainJob's JobSet also runs initializers (dataset, model): only the nodes train.
_REPLICATED_JOB = "jobset.sigs.k8s.io/replicatedjob-name"
_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
_INSTANCE_CHARS = 8
_REPLICA_TYPE = "training.kubeflow.org/replica-type"
_REPLICA_INDEX = "training.kubeflow.org/replica-index"


class KubernetesGangLauncher(GangLauncher):
    """Runs one training job as TrainJobs or PyTorchJobs, one an attempt (the job
    executor's launcher for ``runtime: kubernetes``); the arguments are
    ``GangLauncher``'s, and:

    Args:
        env: Variables for every worker; those named in ``spec.secrets`` are not copied,
            the workers read them from the project's Secret.
        settings: Where and how pods run.
        cluster: The API server.
        project: The job's project (its namespace).
        poll_seconds: How often the object and its pods are looked at.
        pending_timeout: How long a pod may wait to be scheduled before its attempt
            fails as unschedulable.
        platform_namespace: Where the platform's controllers and API run.
    """

    place = "the cluster"

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
        pending_timeout: timedelta = PENDING_TIMEOUT,
        platform_namespace: str = PLATFORM_NAMESPACE,
    ) -> None:
        plain = {k: v for k, v in (env or {}).items() if k not in spec.secrets}
        spec = spec.model_copy(update={"env": {**spec.env, **plain}})
        super().__init__(spec, workdir, cancel=cancel, on_attempt=on_attempt)
        self.settings = settings
        self.cluster = cluster
        self.project = project
        self.poll_seconds = poll_seconds
        self.pending_timeout = pending_timeout
        self.platform_namespace = platform_namespace

    def capacity(self) -> float:
        return float("inf")  # the scheduler places the pods, or says why it cannot

    def _retryable(self, cause: WorkerExit | None) -> bool:
        reason = _cluster_reason(cause)
        verdict = None if reason is None else cluster_verdict(reason)
        return super()._retryable(cause) if verdict is None else verdict

    def _attempt(self, number: int, deadline: float | None) -> GangAttempt:
        attempt = GangAttempt(number=number, started_at=datetime.now(UTC))
        instance = self.workdir.name[-_INSTANCE_CHARS:]
        (obj,) = render_training_job(self.spec, self.settings, self.project, number, instance)
        try:
            if number == 1:
                for namespace_object in project_namespace(
                    self.settings, self.project, platform_namespace=self.platform_namespace
                ):
                    self.cluster.apply(namespace_object)
            self.cluster.apply(obj)
        except Exception as exc:  # the API server refused it: nothing was started
            self._end(attempt, GangOutcome.NOT_STARTED, f"the cluster refused the job: {exc}")
            return attempt
        self._end(attempt, *_Watch(self, obj, attempt, deadline).run())
        return attempt


class _Watch:
    """One attempt's object, looked at until it ends or one of its pods fails; the
    attempt's exits, cause and result are filled in, its outcome returned."""

    def __init__(
        self,
        launcher: KubernetesGangLauncher,
        obj: Manifest,
        attempt: GangAttempt,
        deadline: float | None,
    ) -> None:
        self.launcher = launcher
        self.cluster = launcher.cluster
        self.obj = obj
        self.attempt = attempt
        self.deadline = deadline
        kind, meta = obj["kind"], obj["metadata"]
        self.namespace, self.name = meta["namespace"], meta["name"]
        self.described = f"{kind} {self.namespace}/{self.name}"
        self.selector = f"{_POD_LABEL[kind]}={self.name}"

    def run(self) -> tuple[GangOutcome, str]:
        spec = self.launcher.spec
        while True:
            if self.launcher.cancel.wait(self.launcher.poll_seconds):
                self._delete()
                return GangOutcome.CANCELLED, f"cancelled: {self.described} deleted"
            if self.deadline is not None and time.monotonic() > self.deadline:
                self._delete()
                limit = spec.timeout.total_seconds() if spec.timeout else 0
                return GangOutcome.TIMED_OUT, f"stopped after its timeout of {limit:g} s"
            try:
                current = self.cluster.get(
                    self.obj["apiVersion"], self.obj["kind"], self.namespace, self.name
                )
                if current is None:
                    return GangOutcome.FAILED, f"{self.described} was deleted from the cluster"
                ended = self._ended(_STATE_OF[self.obj["kind"]](current))
            except Exception:  # the API server's hiccup: look again next time
                logger.warning("cannot look at %s", self.described, exc_info=True)
                continue
            if ended is not None:
                return ended

    def _ended(self, state: WorkloadState) -> tuple[GangOutcome, str] | None:
        attempt = self.attempt
        pods = [
            pod
            for pod in self.cluster.pods(self.namespace, self.selector)
            if _labels(pod).get(_REPLICATED_JOB, TRAINER_NODE) == TRAINER_NODE
        ]
        if state.state is Phase.SUCCEEDED:
            attempt.exits = [WorkerExit(rank=_rank(pod), exit_code=0) for pod in pods]
            rank0 = next((pod for pod in pods if _rank(pod) == 0), None)
            attempt.result = _report(rank0).get("result")
            return GangOutcome.SUCCEEDED, f"{self.described} succeeded"
        failed = [_exit(pod, failure) for pod, failure in self._failed_pods(pods)]
        if failed:
            self._delete()  # the rest of the gang waits for the failed worker in vain
            attempt.exits = sorted(failed, key=lambda e: e.rank)
            attempt.cause = _root_cause(attempt.exits)
            return GangOutcome.FAILED, f"{self.described}: {_why(attempt.cause)}"
        if state.state is Phase.FAILED:
            why = ": ".join(part for part in (state.reason, state.message) if part)
            outcome = GangOutcome.TIMED_OUT if state.timed_out else GangOutcome.FAILED
            return outcome, f"{self.described} failed: {why or 'no reason given'}"
        return None

    def _failed_pods(self, pods: list[Manifest]) -> list[tuple[Manifest, PodFailure]]:
        failed: list[tuple[Manifest, PodFailure]] = []
        now = datetime.now(UTC)
        for pod in pods:
            phase = (pod.get("status") or {}).get("phase")
            if phase == "Succeeded":  # a script worker leaves no report to read
                continue
            events = (
                self.cluster.events(self.namespace, pod["metadata"]["name"])
                if phase in (None, "Pending")
                else []
            )
            failure = pod_failure(pod, events, now, self.launcher.pending_timeout)
            if failure is not None:
                failed.append((pod, failure))
        return failed

    def _delete(self) -> None:
        self.cluster.delete(self.obj["apiVersion"], self.obj["kind"], self.namespace, self.name)


def _rank(pod: Manifest) -> int:
    """The worker's rank: a PyTorchJob's master is 0 and its workers follow; a TrainJob's
    node is its pod's completion index."""
    meta = pod.get("metadata") or {}
    found = {**(meta.get("annotations") or {}), **_labels(pod)}
    if _REPLICA_TYPE in found:
        index = int(found.get(_REPLICA_INDEX, 0))
        return index if found[_REPLICA_TYPE] == "master" else index + 1
    return int(found.get(_COMPLETION_INDEX, 0))


def _report(pod: Manifest | None) -> dict[str, Any]:
    """The worker's report from its termination message (``training.REPORT_FILE``)."""
    if pod is None:
        return {}
    try:
        report = json.loads(termination_message(pod))
    except ValueError:  # none, a script's, or cut at the kubelet's 4 KB
        return {}
    return report if isinstance(report, dict) else {}


def _exit(pod: Manifest, failure: PodFailure) -> WorkerExit:
    """A failed pod as a worker's exit. Where the cluster's reason decides a retry, it is
    the exit's ``error_type`` (``kubernetes.<reason>``); otherwise the exception the
    worker reported, else only its exit code, is for the failure policy to judge."""
    rank = _rank(pod)
    if cluster_verdict(failure.reason) is not None:
        return WorkerExit(rank, failure.exit_code, failure.error_type, failure.message)
    report = _report(pod)
    return WorkerExit(
        rank=rank,
        exit_code=failure.exit_code,
        error_type=report.get("error_type"),
        message=report.get("message") or failure.message,
    )


def _labels(pod: Manifest) -> dict[str, str]:
    labels: dict[str, str] = (pod.get("metadata") or {}).get("labels") or {}
    return labels


_REASONS = {ERROR_TYPE_PREFIX + reason.value: reason for reason in FailureReason}


def _cluster_reason(exit_: WorkerExit | None) -> FailureReason | None:
    """The cluster's reason an exit carries (not a user's exception that merely lives
    in a ``kubernetes`` package)."""
    return _REASONS.get(exit_.error_type or "") if exit_ is not None else None


def _root_cause(failed: list[WorkerExit]) -> WorkerExit:
    """The failed worker (by rank) that caused the attempt's end: one the cluster took
    first (its peers fail because it is gone), else the lowest rank."""
    taken = [e for e in failed if _cluster_reason(e) is not None]
    return (taken or failed)[0]


def _why(cause: WorkerExit) -> str:
    if _cluster_reason(cause) is None:
        return describe_exit(cause)
    return f"rank {cause.rank} failed: {cause.message}"
