"""Kubernetes object states mapped to modelyard's outcomes and retry decisions, on object
payloads recorded from real clusters (``payloads/SOURCES.md`` says where each came from)."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from modelyard.pipelines.retries import error_record, retryable
from modelyard.runtimes.container import outcome_message
from modelyard.runtimes.jobs import Outcome, OutcomeKind
from modelyard.runtimes.kubernetes.failures import (
    FailureReason,
    Phase,
    WorkloadState,
    deployment_ready,
    job_state,
    pod_failure,
    pod_outcome,
    pytorchjob_state,
    rayjob_state,
    trainjob_state,
)
from modelyard.specs.pipelines import RetryPolicy
from modelyard.specs.training import SIGNAL_EXIT_CODES, TrainingJobSpec
from modelyard.training.launch import GangLauncher, WorkerExit
from tests.runtimes.kubernetes.validation import InvalidObject, validate

PAYLOADS = Path(__file__).parent / "payloads"
PENDING_TIMEOUT = timedelta(minutes=30)


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PAYLOADS / name).read_text())
    return data


def events() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = load("events-unschedulable.json")["items"]
    return items


def created(obj: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(obj["metadata"]["creationTimestamp"].replace("Z", "+00:00"))


def outcome(
    pod: dict[str, Any], after: timedelta = timedelta(minutes=5), recorded_events: Any = ()
) -> Outcome | None:
    return pod_outcome(pod, list(recorded_events), created(pod) + after, PENDING_TIMEOUT)


# -- the payloads -------------------------------------------------------------------------


def test_every_payload_has_the_shape_the_api_server_writes() -> None:
    """Built-in kinds against Kubernetes' OpenAPI schema, custom resources against their
    pinned CRDs; only kinds without a pinned CRD go unchecked, and they are named."""
    unchecked = set()
    files = sorted(PAYLOADS.glob("*.json"))
    assert len(files) >= 25
    for path in files:
        loaded = json.loads(path.read_text())
        for obj in loaded["items"] if loaded["kind"] == "List" else [loaded]:
            try:
                validate(obj)
            except InvalidObject as exc:
                if "no CRD" not in str(exc):
                    raise
                unchecked.add(f"{obj['apiVersion']} {obj['kind']}")
    assert unchecked <= {"trainer.kubeflow.org/v1alpha1 TrainJob"}


def test_every_payload_has_its_source_recorded() -> None:
    sources = (PAYLOADS / "SOURCES.md").read_text()
    missing = [p.name for p in PAYLOADS.glob("*.json") if f"`{p.name}`" not in sources]
    assert missing == []


# -- pods: how an attempt ended -----------------------------------------------------------


def test_a_pod_that_ran_to_the_end_succeeds_with_the_value_of_its_termination_message() -> None:
    result = outcome(load("pod-succeeded.json"))
    assert result == Outcome(
        kind=OutcomeKind.SUCCEEDED,
        value="runs/8d1c/tasks/train/attempt-1/output",
        exit_code=0,
        seconds=9.874,
    )


def test_the_users_exception_is_raised_with_their_traceback() -> None:
    result = outcome(load("pod-user-error.json"))
    assert result is not None
    assert result.kind is OutcomeKind.RAISED
    assert (result.error_type, result.error_message, result.exit_code) == (
        "builtins.KeyError",
        "'label'",
        1,
    )
    assert result.traceback is not None
    assert result.traceback.endswith("KeyError: 'label'\n")
    assert error_record(result)["source"] == "user"


@pytest.mark.parametrize(
    "reported",
    [
        Outcome(kind=OutcomeKind.SUCCEEDED, value={"ref": "runs/1/out"}, seconds=1.5),
        Outcome(
            kind=OutcomeKind.RAISED,
            error_type="requests.exceptions.Timeout",
            error_message="read timed out",
            traceback="Traceback (most recent call last):\n" + "  frame\n" * 2000,
            seconds=2.0,
        ),
        Outcome(kind=OutcomeKind.TIMED_OUT, error_message="stopped after 60 s", seconds=60.0),
    ],
)
def test_what_the_task_runner_reports_is_the_outcome(reported: Outcome) -> None:
    """The container's runner (``runtimes.container``) writes the report; this reads it."""
    pod = load("pod-succeeded.json" if reported.ok else "pod-user-error.json")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    terminated["message"] = outcome_message(reported)
    assert len(terminated["message"].encode()) <= 4096
    result = outcome(pod)
    assert result is not None
    expected_traceback = json.loads(terminated["message"]).get("traceback")
    assert result == replace(
        reported, exit_code=terminated["exitCode"], traceback=expected_traceback
    )


CRASHES = [
    (
        "pod-oomkilled.json",
        FailureReason.OOM_KILLED,
        "out of memory: container 'memory-demo-2-ctr' was killed at its 100Mi limit",
        137,
        True,
    ),
    (
        "pod-image-pull-backoff.json",
        FailureReason.IMAGE_PULL,
        "image 'registry.example.com/ml/trainer:v9.9.9' cannot be pulled: Back-off pulling "
        'image "registry.example.com/ml/trainer:v9.9.9": ErrImagePull: rpc error: code = '
        'NotFound desc = failed to pull and unpack image "registry.example.com/ml/trainer:'
        'v9.9.9": failed to resolve reference "registry.example.com/ml/trainer:v9.9.9": '
        "registry.example.com/ml/trainer:v9.9.9: not found",
        None,
        False,
    ),
    (
        "pod-create-container-config-error.json",
        FailureReason.CONFIG_ERROR,
        "container 'keptn-function-runner' cannot be configured: couldn't find key SECURE_DATA "
        "in Secret default/deno-demo-secret",
        None,
        False,
    ),
    (
        "pod-evicted.json",
        FailureReason.EVICTED,
        "evicted: The node was low on resource: memory. Threshold quantity: 100Mi, available: "
        "87348Ki. Container task was using 35505620Ki, request is 12Gi, has larger "
        "consumption of memory.",
        137,
        True,
    ),
    (
        "pod-preempted.json",
        FailureReason.PREEMPTED,
        "preempted by a higher-priority pod: Kube-scheduler: preempting to accommodate a higher "
        "priority pod: default/pause2",
        137,
        True,
    ),
    (
        "pod-node-lost.json",
        FailureReason.NODE_LOST,
        "node lost: Node ip-172-20-51-183.ec2.internal which was running pod web-0 is unresponsive",
        None,
        True,
    ),
    (
        "pod-device-failure.json",
        FailureReason.DEVICE_FAILURE,
        "device failure: container 'task' exited with code 139 (SIGSEGV), as a GPU or driver "
        "fault ends a process",
        139,
        True,
    ),
    (
        "pod-unexpected-admission-error.json",
        FailureReason.DEVICE_FAILURE,
        "device failure: Pod was rejected: Allocate failed due to requested number of devices "
        "unavailable for nvidia.com/gpu. Requested: 1, Available: 0, which is unexpected",
        None,
        True,
    ),
]


@pytest.mark.parametrize(("name", "reason", "message", "exit_code", "retry"), CRASHES)
def test_a_pod_the_cluster_ended_crashes_with_a_readable_reason(
    name: str, reason: FailureReason, message: str, exit_code: int | None, retry: bool
) -> None:
    pod = load(name)
    result = outcome(pod)
    assert result == Outcome(
        kind=OutcomeKind.CRASHED,
        error_type=f"kubernetes.{reason.value}",
        error_message=message,
        exit_code=exit_code,
    )
    failure = pod_failure(pod, [], created(pod) + timedelta(minutes=5), PENDING_TIMEOUT)
    assert failure is not None
    assert (failure.reason, failure.retryable) == (reason, retry)
    assert error_record(result)["source"] == "process"


@pytest.mark.parametrize(
    "name", ["pod-image-pull-backoff.json", "pod-create-container-config-error.json"]
)
def test_an_image_or_configuration_error_ends_the_attempt_at_once(name: str) -> None:
    result = outcome(load(name), after=timedelta(seconds=1))
    assert result is not None
    assert result.kind is OutcomeKind.CRASHED
    assert result.exit_code is None


def test_an_init_containers_image_that_cannot_be_pulled_ends_the_attempt() -> None:
    pod = load("pod-image-pull-backoff.json")
    status = pod["status"]
    status["initContainerStatuses"] = status.pop("containerStatuses")
    status["initContainerStatuses"][0]["name"] = "fetch"
    pod["spec"]["initContainers"] = [dict(pod["spec"]["containers"][0], name="fetch")]
    result = outcome(pod)
    assert result is not None
    assert result.error_type == "kubernetes.ImagePull"


def test_an_unplaced_pod_is_pending_until_its_timeout_then_names_the_schedulers_reason() -> None:
    pod = load("pod-unschedulable.json")
    assert outcome(pod, after=timedelta(minutes=29), recorded_events=events()) is None
    result = outcome(pod, after=timedelta(minutes=31), recorded_events=events())
    latest = events()[2]  # the newest FailedScheduling event (the pod's; one is the Job's)
    assert result == Outcome(
        kind=OutcomeKind.CRASHED,
        error_type="kubernetes.Unschedulable",
        error_message=f"unschedulable: {latest['message']} (pending for more than 30 min)",
    )


def test_without_events_the_pods_own_scheduling_condition_names_the_reason() -> None:
    pod = load("pod-unschedulable.json")
    result = outcome(pod, after=timedelta(hours=2))
    assert result is not None
    assert result.error_message == (
        "unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: "
        "0/3 nodes are available: 3 No preemption victims found for incoming pod. "
        "(pending for more than 30 min)"
    )


def test_a_scheduled_pod_still_starting_is_left_to_the_attempts_own_timeout() -> None:
    pod = load("pod-image-pull-backoff.json")
    pod["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ContainerCreating"}}
    assert outcome(pod, after=timedelta(hours=5)) is None


def test_a_running_pod_has_no_outcome_yet() -> None:
    pod = load("pod-node-lost.json")
    del pod["status"]["reason"], pod["status"]["message"], pod["metadata"]["deletionTimestamp"]
    assert outcome(pod) is None


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("PreemptionByScheduler", FailureReason.PREEMPTED),
        ("EvictedByPreemption", FailureReason.PREEMPTED),
        ("EvictionByEvictionAPI", FailureReason.EVICTED),
        ("DeletionByTaintManager", FailureReason.NODE_LOST),
        ("TerminationByKubelet", FailureReason.NODE_LOST),
    ],
)
def test_the_disruption_condition_names_who_took_the_pod(
    reason: str, expected: FailureReason
) -> None:
    pod = load("pod-preempted.json")
    pod["status"]["conditions"][0]["reason"] = reason
    failure = pod_failure(pod, [], created(pod), PENDING_TIMEOUT)
    assert failure is not None
    assert (failure.reason, failure.exit_code, failure.retryable) == (expected, 137, True)


def test_a_preempted_pod_is_retryable_whatever_code_its_container_exited_with() -> None:
    pod = load("pod-preempted.json")
    pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] = 1
    failure = pod_failure(pod, [], created(pod), PENDING_TIMEOUT)
    assert failure is not None
    assert (failure.reason, failure.exit_code, failure.retryable) == (
        FailureReason.PREEMPTED,
        1,
        True,
    )


def test_a_disrupted_pod_is_the_clusters_failure_even_when_its_code_raised_on_the_way_out() -> None:
    pod = load("pod-preempted.json")
    report = {"kind": "raised", "error_type": "builtins.KeyboardInterrupt", "error_message": ""}
    pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = json.dumps(report)
    result = outcome(pod)
    assert result is not None
    assert (result.kind, result.error_type) == (OutcomeKind.CRASHED, "kubernetes.Preempted")


@pytest.mark.parametrize(
    ("code", "reason", "message", "retry"),
    [
        (
            135,
            FailureReason.DEVICE_FAILURE,
            "device failure: container 'task' exited with code 135 (SIGBUS), as a GPU or "
            "driver fault ends a process",
            True,
        ),
        (
            132,
            FailureReason.USER_ERROR,
            "container 'task' was killed by SIGILL (exit code 132)",
            False,
        ),
        (
            134,
            FailureReason.USER_ERROR,
            "container 'task' was killed by SIGABRT (exit code 134)",
            False,
        ),
        (
            143,
            FailureReason.UNKNOWN,
            "container 'task' was killed by SIGTERM (exit code 143)",
            True,
        ),
        (2, FailureReason.USER_ERROR, "container 'task' exited with code 2", False),
    ],
)
def test_exit_codes_decide_between_device_faults_kills_and_the_users_own_exit(
    code: int, reason: FailureReason, message: str, retry: bool
) -> None:
    pod = load("pod-device-failure.json")
    pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] = code
    failure = pod_failure(pod, [], created(pod), PENDING_TIMEOUT)
    assert failure is not None
    assert (failure.reason, failure.message, failure.exit_code, failure.retryable) == (
        reason,
        message,
        code,
        retry,
    )


def test_a_pod_past_its_active_deadline_times_out() -> None:
    pod = load("pod-user-error.json")
    del pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
    pod["status"]["reason"] = "DeadlineExceeded"
    pod["status"]["message"] = "Pod was active on the node longer than the specified deadline"
    result = outcome(pod)
    assert result == Outcome(
        kind=OutcomeKind.TIMED_OUT,
        error_type="kubernetes.DeadlineExceeded",
        error_message="exceeded its deadline: Pod was active on the node longer than the "
        "specified deadline",
    )


def test_a_result_cut_at_the_kubelets_4_kb_limit_is_not_taken_for_a_value() -> None:
    pod = load("pod-succeeded.json")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    terminated["message"] = json.dumps({"kind": "succeeded", "value": "x" * 5000})[:4096]
    result = outcome(pod)
    assert result is not None
    assert (result.kind, result.error_type, result.exit_code) == (
        OutcomeKind.CRASHED,
        "kubernetes.Unknown",
        0,
    )


def test_a_failed_pod_without_a_report_shows_the_start_of_its_message() -> None:
    pod = load("pod-user-error.json")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    terminated["message"] = "ModuleNotFoundError: No module named 'flows'\n" + "x" * 4000
    result = outcome(pod)
    assert result is not None
    assert result.kind is OutcomeKind.CRASHED
    assert result.error_type == "kubernetes.UserError"
    assert result.error_message is not None
    assert result.error_message.startswith(
        "container 'termination-demo-container' exited with code 1: ModuleNotFoundError: No "
        "module named 'flows' xxx"
    )
    assert len(result.error_message) < 600


# -- retry decisions ----------------------------------------------------------------------


def crash_of(name: str) -> Outcome:
    pod = load(name)
    after = timedelta(hours=1)
    result = pod_outcome(pod, events(), created(pod) + after, PENDING_TIMEOUT)
    assert result is not None
    return result


@pytest.mark.parametrize(
    ("name", "policy", "expected"),
    [
        ("pod-image-pull-backoff.json", RetryPolicy(retries=3), False),
        ("pod-image-pull-backoff.json", RetryPolicy(retries=3, on_exit_codes=(137,)), False),
        ("pod-create-container-config-error.json", RetryPolicy(retries=3), False),
        ("pod-oomkilled.json", RetryPolicy(retries=3), True),
        ("pod-oomkilled.json", RetryPolicy(retries=3, on_exit_codes=(137,)), True),
        ("pod-oomkilled.json", RetryPolicy(retries=3, on_exit_codes=(143,)), False),
        ("pod-evicted.json", RetryPolicy(retries=3), True),
        ("pod-preempted.json", RetryPolicy(retries=3, on_exit_codes=(137, 143)), True),
        ("pod-node-lost.json", RetryPolicy(retries=3), True),
        ("pod-device-failure.json", RetryPolicy(retries=3, on_exit_codes=(139,)), True),
        ("pod-unexpected-admission-error.json", RetryPolicy(retries=3), True),
        ("pod-unschedulable.json", RetryPolicy(retries=3), True),
        ("pod-user-error.json", RetryPolicy(retries=3), True),
        ("pod-user-error.json", RetryPolicy(retries=3, on_exceptions=("KeyError",)), True),
        ("pod-user-error.json", RetryPolicy(retries=3, on_exceptions=("ConnectionError",)), False),
    ],
)
def test_the_pipeline_retry_policy_decides_on_kubernetes_outcomes_as_on_local_ones(
    name: str, policy: RetryPolicy, expected: bool
) -> None:
    assert retryable(policy, crash_of(name)) is expected


def test_a_local_crash_without_an_exit_code_is_still_retried() -> None:
    crash = Outcome(kind=OutcomeKind.CRASHED, error_message="a worker process could not start")
    assert retryable(RetryPolicy(retries=1), crash) is True


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pod-oomkilled.json", True),
        ("pod-evicted.json", True),
        ("pod-preempted.json", True),
        ("pod-device-failure.json", True),
        ("pod-user-error.json", False),
    ],
)
def test_the_training_failure_policy_retries_the_same_exit_codes(
    name: str, expected: bool, tmp_path: Path
) -> None:
    pod = load(name)
    failure = pod_failure(pod, [], created(pod), PENDING_TIMEOUT)
    assert failure is not None
    assert failure.exit_code is not None
    launcher = GangLauncher(TrainingJobSpec(name="t", entrypoint="train:main"), tmp_path)
    assert failure.retryable is expected
    assert launcher._retryable(WorkerExit(rank=0, exit_code=failure.exit_code)) is expected
    assert (failure.exit_code in SIGNAL_EXIT_CODES) is expected


# -- owners: Job, PyTorchJob, TrainJob, RayJob, Deployment --------------------------------


@pytest.mark.parametrize(
    ("name", "read", "expected"),
    [
        (
            "job-complete.json",
            job_state,
            WorkloadState(
                Phase.SUCCEEDED, "CompletionsReached", "Reached expected number of succeeded pods"
            ),
        ),
        (
            "job-failed.json",
            job_state,
            WorkloadState(
                Phase.FAILED, "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            ),
        ),
        (
            "job-deadline-exceeded.json",
            job_state,
            WorkloadState(
                Phase.FAILED, "DeadlineExceeded", "Job was active longer than specified deadline"
            ),
        ),
        (
            "job-pod-failure-policy.json",
            job_state,
            WorkloadState(
                Phase.FAILED,
                "PodFailurePolicy",
                "Container main for pod default/job-pod-failure-policy-failjob-8ckj8 failed with "
                "exit code 42 matching FailJob rule at index 0",
            ),
        ),
        ("job-running.json", job_state, WorkloadState(Phase.RUNNING)),
        (
            "pytorchjob-succeeded.json",
            pytorchjob_state,
            WorkloadState(
                Phase.SUCCEEDED,
                "PyTorchJobSucceeded",
                "PyTorchJob kubeflow/pytorch-simple successfully completed.",
            ),
        ),
        (
            "pytorchjob-failed.json",
            pytorchjob_state,
            WorkloadState(
                Phase.FAILED,
                "PyTorchJobFailed",
                "PyTorchJob kubeflow/pytorchjob has failed because 1 Worker replica(s) failed.",
            ),
        ),
        (
            "pytorchjob-running.json",
            pytorchjob_state,
            WorkloadState(
                Phase.RUNNING, "PyTorchJobRunning", "PyTorchJob kubeflow/pytorch-simple is running."
            ),
        ),
        (
            "trainjob-complete.json",
            trainjob_state,
            WorkloadState(Phase.SUCCEEDED, "AllJobsCompleted", "jobset completed successfully"),
        ),
        (
            "trainjob-failed.json",
            trainjob_state,
            WorkloadState(
                Phase.FAILED,
                "FailedJobs",
                "jobset failed due to one or more job failures (first failed job: "
                "pytorch-mnist-node-0)",
            ),
        ),
        ("trainjob-running.json", trainjob_state, WorkloadState(Phase.RUNNING)),
        (
            "rayjob-succeeded.json",
            rayjob_state,
            WorkloadState(Phase.SUCCEEDED, "", "Job finished successfully."),
        ),
        (
            "rayjob-failed.json",
            rayjob_state,
            WorkloadState(
                Phase.FAILED,
                "AppFailed",
                "Job failed due to an application error, last available logs (truncated to "
                "20,000 chars): python: can't open file '/home/ray/samples/sample_code.ppy': "
                "[Errno 2] No such file or directory",
            ),
        ),
        (
            "rayjob-submission-failed.json",
            rayjob_state,
            WorkloadState(
                Phase.FAILED,
                "SubmissionFailed",
                "Job submission has failed. Reason: BackoffLimitExceeded. Message: Job has "
                "reached the specified backoff limit",
            ),
        ),
        ("rayjob-initializing.json", rayjob_state, WorkloadState(Phase.PENDING, "Initializing")),
        (
            "deployment-available.json",
            deployment_ready,
            WorkloadState(Phase.RUNNING, "Available", "3/3 replicas available"),
        ),
        (
            "deployment-progressing.json",
            deployment_ready,
            WorkloadState(Phase.PENDING, "ReplicaSetUpdated", "2/3 replicas available"),
        ),
        (
            "deployment-progress-deadline-exceeded.json",
            deployment_ready,
            WorkloadState(
                Phase.FAILED,
                "ProgressDeadlineExceeded",
                'ReplicaSet "nginx-deployment-4262182780" has timed out progressing.',
            ),
        ),
    ],
)
def test_owner_states(name: str, read: Any, expected: WorkloadState) -> None:
    assert read(load(name)) == expected


def test_a_job_past_its_deadline_timed_out_and_one_past_its_backoff_limit_did_not() -> None:
    assert job_state(load("job-deadline-exceeded.json")).timed_out
    failed = job_state(load("job-failed.json"))
    assert failed.finished
    assert not failed.timed_out


def test_a_suspended_job_is_pending() -> None:
    job = load("job-running.json")
    job["status"] = {
        "conditions": [
            {
                "lastProbeTime": "2026-11-20T09:40:05Z",
                "lastTransitionTime": "2026-11-20T09:40:05Z",
                "message": "Job suspended",
                "reason": "JobSuspended",
                "status": "True",
                "type": "Suspended",
            }
        ]
    }
    assert job_state(job) == WorkloadState(Phase.PENDING, "JobSuspended", "Job suspended")


def test_a_restarting_pytorchjob_is_still_running() -> None:
    obj = load("pytorchjob-running.json")
    running = obj["status"]["conditions"][1]
    running["status"] = "False"
    restarting = copy.deepcopy(running)
    restarting.update(
        status="True",
        type="Restarting",
        reason="PyTorchJobRestarting",
        message="PyTorchJob kubeflow/pytorch-simple is restarting because 1 Worker replica(s) "
        "failed.",
    )
    obj["status"]["conditions"].append(restarting)
    state = pytorchjob_state(obj)
    assert (state.state, state.reason) == (Phase.RUNNING, "PyTorchJobRestarting")


def test_a_deployment_whose_new_spec_is_not_yet_observed_is_pending() -> None:
    obj = load("deployment-available.json")
    obj["metadata"]["generation"] = 3
    assert deployment_ready(obj).state is Phase.PENDING
