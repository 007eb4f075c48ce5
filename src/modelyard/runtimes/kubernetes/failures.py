"""What a Kubernetes object's status means for modelyard: a pod's end as an Outcome with a
failure reason people can read, and the state of the objects that own the pods (a
``batch/v1`` Job, a Kubeflow ``TrainJob`` or ``PyTorchJob``, a KubeRay ``RayJob``, a
Deployment).

Pure functions over the dicts the API server returns; nothing here talks to a cluster.

Retry decisions follow the rest of modelyard. A pod's end becomes an ``Outcome`` that
``pipelines.retries.retryable`` judges by its kind and exit code as it judges a local
worker's, and ``PodFailure.retryable`` is the training ``FailurePolicy``'s rule: a
container killed by a signal (out of memory, preempted, evicted, a device fault) or lost
with its node is tried again; the user's own exit code is not. An image that cannot be
pulled or a container that cannot be configured (a missing Secret key) ends the attempt
at once and is never retried: another attempt meets the same image and the same Secret.
Its Outcome carries no exit code and an ``error_type`` that ``retries.UNRETRYABLE_CRASHES``
lists, so no retry policy retries it.

Device failures are the GPU's and driver's faults the container sees: SIGSEGV (139) and
SIGBUS (135), the signals a driver fault or an Xid error kills a CUDA process with, which
the FailurePolicy retries; and a pod the kubelet refuses because its device plugin cannot
allocate the GPU it was scheduled for (``UnexpectedAdmissionError``, "Allocate failed").
SIGILL (132) and SIGABRT (134) are not: they are what a binary built for another CPU or
an uncaught C++ exception (an ``assert``, ``c10::Error``) dies with, the program's own
failure, and a new attempt on the same image fails the same way.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from modelyard.runtimes.jobs import Outcome, OutcomeKind
from modelyard.specs.training import SIGNAL_EXIT_CODES

Obj = Mapping[str, Any]

ERROR_TYPE_PREFIX = "kubernetes."

_IMAGE_PULL = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
_CONFIG_ERROR = frozenset({"CreateContainerConfigError"})
# Exit codes (128 + signal) of a container a GPU or its driver brought down.
DEVICE_EXIT_CODES = frozenset({128 + signal.SIGSEGV, 128 + signal.SIGBUS})
_OOM_EXIT = 128 + signal.SIGKILL
_MESSAGE_CHARS = 500
_REPORT_KINDS = frozenset(kind.value for kind in OutcomeKind)
_PREEMPTION = frozenset(
    {"PreemptionByScheduler", "PreemptionByKubeScheduler", "EvictedByPreemption"}
)
_EVICTION = frozenset({"EvictionByEvictionAPI"})
_NODE_GONE = frozenset({"DeletionByTaintManager", "TerminationByKubelet", "DeletionByPodGC"})


class FailureReason(StrEnum):
    """Why a pod's attempt ended without a result (its value names the Outcome's
    ``error_type``: ``kubernetes.<value>``)."""

    OOM_KILLED = "OOMKilled"
    IMAGE_PULL = "ImagePull"
    CONFIG_ERROR = "ConfigError"
    UNSCHEDULABLE = "Unschedulable"
    EVICTED = "Evicted"
    PREEMPTED = "Preempted"
    NODE_LOST = "NodeLost"
    DEVICE_FAILURE = "DeviceFailure"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    USER_ERROR = "UserError"
    UNKNOWN = "Unknown"


# Failures that retrying cannot mend, whatever the exit code says.
NOT_RETRYABLE = frozenset({FailureReason.IMAGE_PULL, FailureReason.CONFIG_ERROR})
_INFRASTRUCTURE = frozenset(
    {
        FailureReason.OOM_KILLED,
        FailureReason.UNSCHEDULABLE,
        FailureReason.EVICTED,
        FailureReason.PREEMPTED,
        FailureReason.NODE_LOST,
        FailureReason.DEVICE_FAILURE,
    }
)


@dataclass(frozen=True)
class PodFailure:
    """A pod's attempt that ended without a result.

    Args:
        reason: What ended it.
        message: What happened, for people (names the container, image, node or limit).
        exit_code: The task container's exit code, when it ran and the kubelet saw it end.
        retryable: Whether another attempt can help, by the training FailurePolicy's rule
            (``SIGNAL_EXIT_CODES``) made explicit for pods: an out-of-memory kill, a pod
            the cluster evicted, preempted, lost or could not place, a device fault, or
            another kill by SIGKILL/SIGTERM yes; the user's own exit code, an image or
            configuration error, or a deadline no.
    """

    reason: FailureReason
    message: str
    exit_code: int | None = None
    retryable: bool = False

    @property
    def error_type(self) -> str:
        return ERROR_TYPE_PREFIX + self.reason.value

    def outcome(self) -> Outcome:
        """The Outcome the pipeline engine records and its retry policy judges."""
        kind = (
            OutcomeKind.TIMED_OUT
            if self.reason is FailureReason.DEADLINE_EXCEEDED
            else OutcomeKind.CRASHED
        )
        return Outcome(
            kind=kind,
            error_type=self.error_type,
            error_message=self.message,
            exit_code=self.exit_code,
        )


def cluster_verdict(reason: FailureReason) -> bool | None:
    """Whether another attempt can help, where the cluster's reason settles it whatever
    the exit code: no for an image, configuration or deadline failure; yes when the
    cluster took the pod (or its memory, or its GPU). None for the container's own end
    (a user error, an unexplained kill), which the exit code decides."""
    if reason in NOT_RETRYABLE or reason is FailureReason.DEADLINE_EXCEEDED:
        return False
    if reason in _INFRASTRUCTURE:
        return True
    return None


def _failure(reason: FailureReason, message: str, exit_code: int | None = None) -> PodFailure:
    verdict = cluster_verdict(reason)
    retryable = exit_code in SIGNAL_EXIT_CODES if verdict is None else verdict
    return PodFailure(reason, message, exit_code, retryable)


# -- pods ---------------------------------------------------------------------------------


def pod_outcome(
    pod: Obj, events: Iterable[Obj], now: datetime, pending_timeout: timedelta
) -> Outcome | None:
    """How a task attempt's pod ended, or None while it runs or waits to be placed.

    Args:
        pod: The Pod as the API server returns it.
        events: Events (others than the pod's are ignored); the scheduler's reason for a
            pod it cannot place is read from its latest ``FailedScheduling`` event.
        now: The current time (timezone-aware).
        pending_timeout: How long a pod may wait to be scheduled before the attempt fails.

    Returns:
        SUCCEEDED with the value from the termination message; RAISED with the user's
        exception from it; TIMED_OUT for a pod past its deadline; CRASHED with an
        ``error_type`` of ``kubernetes.<reason>`` and a readable message for the rest;
        None while the pod is running, or unscheduled within ``pending_timeout``.
    """
    status = pod.get("status") or {}
    terminated = _terminated(_main_container(pod))
    report = _report(terminated)
    phase = status.get("phase")
    if report is not None and (
        (phase == "Succeeded" and report["kind"] == "succeeded")
        or (
            phase == "Failed"
            and report["kind"] != "succeeded"
            and not status.get("reason")  # not evicted, lost or past its deadline
            and _disruption(pod) is None
        )
    ):
        # The task runner's own account (``runtimes.container``): the user's value or
        # exception, as a local worker reports it.
        return Outcome(
            kind=OutcomeKind(report["kind"]),
            value=report.get("value"),
            error_type=report.get("error_type"),
            error_message=report.get("error_message"),
            traceback=report.get("traceback"),
            exit_code=_int(terminated.get("exitCode")) if terminated else None,
            seconds=float(report.get("seconds") or 0.0),
        )
    failure = pod_failure(pod, events, now, pending_timeout)
    return None if failure is None else failure.outcome()


def pod_failure(
    pod: Obj, events: Iterable[Obj], now: datetime, pending_timeout: timedelta
) -> PodFailure | None:
    """Why a pod's attempt failed, or None while it runs, when it succeeded, or while it
    waits to be scheduled within ``pending_timeout`` (see ``pod_outcome``)."""
    status = pod.get("status") or {}
    phase = status.get("phase")
    main = _main_container(pod)
    name = _container_name(main, pod)
    terminated = _terminated(main)
    exit_code = _int(terminated.get("exitCode")) if terminated else None
    if phase == "Succeeded":
        report = _report(terminated)
        if report is not None and report.get("kind") == "succeeded":
            return None
        # Exit 0 without a result to read: the runner never wrote it, or it was cut at
        # the kubelet's 4 KB limit.
        return _failure(
            FailureReason.UNKNOWN,
            f"container {name!r} exited 0 without a readable result in its termination message",
            exit_code,
        )
    blocked = _blocked(pod)
    if blocked is not None:
        return blocked

    pod_reason = status.get("reason")
    pod_message = _clean(status.get("message"))
    if pod_reason == "Evicted":
        return _failure(FailureReason.EVICTED, f"evicted: {pod_message}", exit_code)
    if pod_reason == "DeadlineExceeded":
        detail = f": {pod_message}" if pod_message else ""
        return _failure(FailureReason.DEADLINE_EXCEEDED, f"exceeded its deadline{detail}")
    if pod_reason == "NodeLost":
        return _failure(FailureReason.NODE_LOST, f"node lost: {pod_message}")
    if pod_reason == "UnexpectedAdmissionError":
        return _failure(FailureReason.DEVICE_FAILURE, f"device failure: {pod_message}")
    disruption = _disruption(pod)
    if disruption is not None:
        return _disrupted(disruption, exit_code)
    # A task container that ended non-zero ends the attempt even while a sidecar runs on.
    if phase == "Failed" or (terminated is not None and exit_code not in (None, 0)):
        return _container_failure(pod, name, terminated, exit_code, pod_reason, pod_message)
    if phase in ("Pending", None):
        return _unscheduled(pod, events, now, pending_timeout)
    return None


def _blocked(pod: Obj) -> PodFailure | None:
    """A container the kubelet cannot start for a reason no wait or retry mends."""
    status = pod.get("status") or {}
    statuses = [*status.get("initContainerStatuses", ()), *status.get("containerStatuses", ())]
    for container in statuses:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason, message = waiting.get("reason"), _clean(waiting.get("message"))
        if reason in _IMAGE_PULL:
            image = container.get("image") or _spec_image(pod, container.get("name"))
            detail = message or reason
            return _failure(FailureReason.IMAGE_PULL, f"image {image!r} cannot be pulled: {detail}")
        if reason in _CONFIG_ERROR:
            name = container.get("name")
            return _failure(
                FailureReason.CONFIG_ERROR,
                f"container {name!r} cannot be configured: {message or reason}",
            )
    return None


def _disrupted(condition: Obj, exit_code: int | None) -> PodFailure:
    reason = condition.get("reason")
    message = _clean(condition.get("message"))
    if reason in _PREEMPTION:
        text = "preempted by a higher-priority pod"
        return _failure(
            FailureReason.PREEMPTED, f"{text}: {message}" if message else text, exit_code
        )
    if reason in _EVICTION:
        return _failure(FailureReason.EVICTED, f"evicted: {message or reason}", exit_code)
    if reason in _NODE_GONE:
        return _failure(FailureReason.NODE_LOST, f"node lost: {message or reason}", exit_code)
    return _failure(FailureReason.UNKNOWN, f"disrupted ({reason}): {message}", exit_code)


def _container_failure(
    pod: Obj,
    name: str,
    terminated: Obj | None,
    exit_code: int | None,
    pod_reason: str | None,
    pod_message: str,
) -> PodFailure:
    if terminated is None:
        detail = pod_message or pod_reason or "no container status was reported"
        return _failure(FailureReason.UNKNOWN, f"the pod failed: {detail}")
    reason = terminated.get("reason")
    if reason == "OOMKilled":
        limit = _memory_limit(pod, name)
        where = f"at its {limit} limit" if limit else "by the kernel's out-of-memory killer"
        return _failure(
            FailureReason.OOM_KILLED,
            f"out of memory: container {name!r} was killed {where}",
            exit_code if exit_code is not None else _OOM_EXIT,
        )
    if exit_code in DEVICE_EXIT_CODES:
        return _failure(
            FailureReason.DEVICE_FAILURE,
            f"device failure: container {name!r} exited with code {exit_code} "
            f"({_signal_name(exit_code)}), as a GPU or driver fault ends a process",
            exit_code,
        )
    text = _exit_text(exit_code)
    # A termination message that is not the runner's report (its log tail under
    # FallbackToLogsOnError, or a report cut at the kubelet's 4 KB) is shown in part.
    message = _clean(terminated.get("message"))[:_MESSAGE_CHARS]
    suffix = f": {message}" if message and _report(terminated) is None else ""
    if exit_code is not None and exit_code in SIGNAL_EXIT_CODES:
        # SIGKILL or SIGTERM without a disruption or OOM record (e.g. the container
        # outlived its grace period): a kill from outside, not the user's exit.
        return _failure(FailureReason.UNKNOWN, f"container {name!r} {text}{suffix}", exit_code)
    return _failure(FailureReason.USER_ERROR, f"container {name!r} {text}{suffix}", exit_code)


def _unscheduled(
    pod: Obj, events: Iterable[Obj], now: datetime, pending_timeout: timedelta
) -> PodFailure | None:
    """A pod no node takes, once it has waited ``pending_timeout``. A scheduled pod that
    is still pending (pulling a large image, mounting volumes) is left to the attempt's
    own timeout."""
    status = pod.get("status") or {}
    scheduled = _condition(status, "PodScheduled")
    if scheduled is not None and scheduled.get("status") == "True":
        return None
    since = _time((pod.get("metadata") or {}).get("creationTimestamp")) or _time(
        (scheduled or {}).get("lastTransitionTime")
    )
    if since is None or now - since <= pending_timeout:
        return None
    why = _latest_event(pod, events, "FailedScheduling") or _clean((scheduled or {}).get("message"))
    reason = (scheduled or {}).get("reason") or "not scheduled"
    return _failure(
        FailureReason.UNSCHEDULABLE,
        f"unschedulable: {why or reason} (pending for more than {_duration(pending_timeout)})",
    )


# -- owners: Job, TrainJob, PyTorchJob, RayJob, Deployment --------------------------------


class Phase(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class WorkloadState:
    """Where an object that owns pods stands.

    Args:
        state: pending, running, succeeded or failed (a Deployment "runs" once ready).
        reason: The object's own reason (``BackoffLimitExceeded``, ``DeadlineExceeded``,
            ``ProgressDeadlineExceeded``...), empty when it gives none.
        message: Its own message, for people.
    """

    state: Phase
    reason: str = ""
    message: str = ""

    @property
    def finished(self) -> bool:
        return self.state in (Phase.SUCCEEDED, Phase.FAILED)

    @property
    def timed_out(self) -> bool:
        return self.state is Phase.FAILED and self.reason == "DeadlineExceeded"


def job_state(job: Obj) -> WorkloadState:
    """A ``batch/v1`` Job: Complete, Failed (BackoffLimitExceeded, DeadlineExceeded,
    PodFailurePolicy...), Suspended, or running while it has an active pod."""
    status = job.get("status") or {}
    # FailureTarget and SuccessCriteriaMet (Kubernetes 1.31+) settle the end before the
    # pods have stopped; the terminal Failed/Complete conditions follow them.
    for kind, phase in (
        ("Failed", Phase.FAILED),
        ("FailureTarget", Phase.FAILED),
        ("Complete", Phase.SUCCEEDED),
        ("SuccessCriteriaMet", Phase.SUCCEEDED),
    ):
        condition = _true_condition(status, kind)
        if condition is not None:
            return _from_condition(phase, condition)
    suspended = _true_condition(status, "Suspended")
    if suspended is not None:
        return _from_condition(Phase.PENDING, suspended)
    if (status.get("active") or 0) > 0:
        ready = status.get("ready")
        if ready == 0:
            return WorkloadState(Phase.PENDING, "PodsNotReady", "its pod has not started yet")
        return WorkloadState(Phase.RUNNING)
    return WorkloadState(Phase.PENDING)


def trainjob_state(obj: Obj) -> WorkloadState:
    """A Kubeflow Trainer v2 ``TrainJob``: conditions Complete, Failed and Suspended, and
    running while any of its jobs (``status.jobsStatus``) has an active pod."""
    status = obj.get("status") or {}
    for kind, phase in (("Failed", Phase.FAILED), ("Complete", Phase.SUCCEEDED)):
        condition = _true_condition(status, kind)
        if condition is not None:
            return _from_condition(phase, condition)
    suspended = _true_condition(status, "Suspended")
    if suspended is not None:
        return _from_condition(Phase.PENDING, suspended)
    jobs = status.get("jobsStatus") or []
    if any((job.get("active") or 0) > 0 for job in jobs):
        return WorkloadState(Phase.RUNNING)
    return WorkloadState(Phase.PENDING)


def pytorchjob_state(obj: Obj) -> WorkloadState:
    """A Kubeflow ``PyTorchJob`` (``kubeflow.org/v1``): conditions Created, Running,
    Restarting, Succeeded, Failed (and Suspended)."""
    status = obj.get("status") or {}
    for kind, phase in (("Failed", Phase.FAILED), ("Succeeded", Phase.SUCCEEDED)):
        condition = _true_condition(status, kind)
        if condition is not None:
            return _from_condition(phase, condition)
    for kind, phase in (
        ("Suspended", Phase.PENDING),
        ("Restarting", Phase.RUNNING),
        ("Running", Phase.RUNNING),
        ("Created", Phase.PENDING),
    ):
        condition = _true_condition(status, kind)
        if condition is not None:
            return _from_condition(phase, condition)
    return WorkloadState(Phase.PENDING)


_RAY_JOB = {
    "SUCCEEDED": Phase.SUCCEEDED,
    "FAILED": Phase.FAILED,
    "STOPPED": Phase.FAILED,
    "RUNNING": Phase.RUNNING,
}


def rayjob_state(obj: Obj) -> WorkloadState:
    """A KubeRay ``RayJob``: the Ray job's own status (``status.jobStatus``) once it has
    one, unless KubeRay failed the deployment (``jobDeploymentStatus`` Failed or
    ValidationFailed: a submission that failed, a deadline, an invalid spec), which wins
    even over a Ray job still reported as running."""
    status = obj.get("status") or {}
    deployment = status.get("jobDeploymentStatus") or ""
    job = status.get("jobStatus") or ""
    reason = str(status.get("reason") or "")
    message = _clean(status.get("message"))
    if deployment in ("Failed", "ValidationFailed"):
        return WorkloadState(Phase.FAILED, reason or deployment, message)
    phase = _RAY_JOB.get(job)
    if phase is Phase.FAILED:
        return WorkloadState(phase, reason or job, message or f"the Ray job ended {job}")
    if phase is not None:
        return WorkloadState(phase, reason, message)
    if deployment == "Complete":
        # Complete without a Ray job status: KubeRay never learned how the job ended.
        return WorkloadState(Phase.FAILED, reason or "Complete", message or "no Ray job status")
    return WorkloadState(Phase.PENDING, reason or deployment, message)


def deployment_ready(obj: Obj) -> WorkloadState:
    """A Deployment: running once its latest rollout has every desired replica updated
    and available, failed when a rollout passed its progress deadline
    (``ProgressDeadlineExceeded``), pending while it rolls out."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    progressing = _condition(status, "Progressing")
    if (
        progressing is not None
        and progressing.get("status") == "False"
        and progressing.get("reason") == "ProgressDeadlineExceeded"
    ):
        return _from_condition(Phase.FAILED, progressing)
    desired = _int(spec.get("replicas"))
    desired = 1 if desired is None else desired
    generation = _int((obj.get("metadata") or {}).get("generation")) or 0
    observed = _int(status.get("observedGeneration")) or 0
    available = _int(status.get("availableReplicas")) or 0
    updated = _int(status.get("updatedReplicas")) or 0
    replicas = f"{available}/{desired} replicas available"
    if observed < generation:
        return WorkloadState(Phase.PENDING, "NotObserved", f"{replicas}; rollout not observed yet")
    if updated >= desired and available >= desired:
        return WorkloadState(Phase.RUNNING, "Available", replicas)
    reason = str(progressing.get("reason") or "") if progressing else ""
    return WorkloadState(Phase.PENDING, reason, replicas)


# -- helpers ------------------------------------------------------------------------------


def _main_container(pod: Obj) -> Obj | None:
    """The status of the pod's first container (the task's), else the first reported."""
    statuses = list((pod.get("status") or {}).get("containerStatuses") or [])
    containers = (pod.get("spec") or {}).get("containers") or []
    if containers:
        first = containers[0].get("name")
        for container in statuses:
            if container.get("name") == first:
                return dict(container)
    return dict(statuses[0]) if statuses else None


def _container_name(container: Obj | None, pod: Obj) -> str:
    if container is not None and container.get("name"):
        return str(container["name"])
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    return str(containers[0].get("name") or "?")


def _terminated(container: Obj | None) -> Obj | None:
    if container is None:
        return None
    state = (container.get("state") or {}).get("terminated")
    if state:
        return dict(state)
    last = (container.get("lastState") or {}).get("terminated")
    return dict(last) if last else None


def termination_message(pod: Obj) -> str:
    """What the pod's first container left in its termination message ("" if none)."""
    terminated = _terminated(_main_container(pod))
    return str((terminated or {}).get("message") or "")


def _report(terminated: Obj | None) -> dict[str, Any] | None:
    """The task runner's JSON report in the termination message, if it wrote one."""
    if not terminated or not terminated.get("message"):
        return None
    try:
        report = json.loads(terminated["message"])
    except ValueError:
        return None
    if not isinstance(report, dict) or report.get("kind") not in _REPORT_KINDS:
        return None
    return report


def _disruption(pod: Obj) -> Obj | None:
    return _true_condition(pod.get("status") or {}, "DisruptionTarget")


def _condition(status: Obj, kind: str) -> Obj | None:
    for condition in status.get("conditions") or ():
        if condition.get("type") == kind:
            return dict(condition)
    return None


def _true_condition(status: Obj, kind: str) -> Obj | None:
    condition = _condition(status, kind)
    return condition if condition is not None and condition.get("status") == "True" else None


def _from_condition(phase: Phase, condition: Obj) -> WorkloadState:
    return WorkloadState(
        phase, str(condition.get("reason") or ""), _clean(condition.get("message"))
    )


def _memory_limit(pod: Obj, name: str) -> str | None:
    for container in (pod.get("spec") or {}).get("containers") or ():
        if container.get("name") == name:
            limits = (container.get("resources") or {}).get("limits") or {}
            memory = limits.get("memory")
            return str(memory) if memory is not None else None
    return None


def _spec_image(pod: Obj, name: str | None) -> str:
    spec = pod.get("spec") or {}
    for container in [*spec.get("initContainers", ()), *spec.get("containers", ())]:
        if container.get("name") == name:
            return str(container.get("image"))
    return "?"


def _latest_event(pod: Obj, events: Iterable[Obj], reason: str) -> str:
    found = [e for e in _events_of(pod, events) if e.get("reason") == reason]
    return _clean(max(found, key=_event_time).get("message")) if found else ""


def _events_of(pod: Obj, events: Iterable[Obj]) -> list[Obj]:
    metadata = pod.get("metadata") or {}
    uid, pod_name = metadata.get("uid"), metadata.get("name")
    found = []
    for event in events:
        involved = event.get("involvedObject") or event.get("regarding") or {}
        if involved.get("kind", "Pod") != "Pod":
            continue
        if (uid and involved.get("uid") == uid) or involved.get("name") == pod_name:
            found.append(event)
    return found


def _event_time(event: Obj) -> str:
    # RFC 3339 timestamps in UTC compare as strings; an events.k8s.io event has only
    # eventTime (with microseconds), a core/v1 one lastTimestamp.
    series = event.get("series") or {}
    return str(
        series.get("lastObservedTime")
        or event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or ""
    )


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _exit_text(code: int | None) -> str:
    if code is None:
        return "ended without an exit code"
    if code > 128 and (code - 128) in signal.valid_signals():
        return f"was killed by {_signal_name(code)} (exit code {code})"
    return f"exited with code {code}"


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code - 128).name
    except ValueError:
        return f"signal {code - 128}"


def _clean(value: Any) -> str:
    return " ".join(str(value).split()) if value else ""


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | str) and str(value).lstrip("-").isdigit() else None
