"""Training jobs on Kubernetes through the job store: each attempt of the job's gang is
one PyTorchJob (or TrainJob), and the job's FailurePolicy judges how its pods ended. The
cluster is the one-node stand-in: objects are validated as the API server would, and the
test writes the status the training operator would and gives it the operator's pods
(recorded pod payloads)."""

from __future__ import annotations

import copy
import functools
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelyard.runtimes.kubernetes.settings import ClusterSettings
from modelyard.runtimes.kubernetes.trainjobs import KubernetesGangLauncher
from modelyard.specs.training import FailurePolicy, TrainingJobSpec
from modelyard.store.db import transaction
from modelyard.store.models import Project
from modelyard.training import jobs
from modelyard.training.launch import JobResult
from tests.runtimes.kubernetes.conftest import new_project
from tests.runtimes.kubernetes.kubelet import LocalKubelet, Manifest

pytestmark = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)

NAMESPACE = "modelyard-fraud"
PAYLOADS = Path(__file__).parent / "payloads"
SUCCEEDED = {"conditions": [{"type": "Succeeded", "status": "True"}]}


def submit(
    sessions: sessionmaker[Session], tmp_path: Path, policy: FailurePolicy | None = None
) -> str:
    spec = TrainingJobSpec(
        name="churn",
        entrypoint="train:main",
        workers=3,
        secrets=("WAREHOUSE_TOKEN",),
        runtime="kubernetes",
        failure_policy=policy or FailurePolicy(backoff=0),
    )
    with sessions() as session:
        existing = session.scalar(select(Project.id).where(Project.name == "fraud"))
    project_id = existing or new_project(sessions, "fraud")
    with transaction(sessions) as session:
        return jobs.submit(session, project_id, spec, tmp_path / "jobs", "ana").id


class Running:
    """``run_here`` in a thread, as the job executor runs it."""

    def __init__(
        self, sessions: sessionmaker[Session], job_id: str, kubelet: LocalKubelet, operator: str
    ) -> None:
        self.result: JobResult | None = None
        launcher = functools.partial(
            KubernetesGangLauncher,
            settings=ClusterSettings(training_operator=operator),
            cluster=kubelet,
            project="fraud",
            poll_seconds=0.02,
        )
        env = {"WAREHOUSE_TOKEN": "s3cr3t", "MLFLOW_RUN_ID": "abc123"}

        def run() -> None:
            self.result = jobs.run_here(sessions, job_id, env=env, launcher=launcher)

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def finish(self) -> JobResult:
        self.thread.join(timeout=30)
        assert self.result is not None
        return self.result


def applied(kubelet: LocalKubelet, kind: str) -> Manifest:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for key, obj in list(kubelet.objects_by_key.items()):
            if key[1] == kind:
                return obj
        time.sleep(0.02)
    raise AssertionError(f"no {kind} was applied")


def state_of(sessions: sessionmaker[Session], job_id: str) -> tuple[str, str, int]:
    with sessions() as session:
        job = jobs.find(session, job_id)
        return job.state, job.reason, len(jobs.attempts_of(session, job_id))


@pytest.mark.parametrize(
    ("operator", "kind", "done"),
    [
        ("pytorchjob", "PyTorchJob", {"conditions": [{"type": "Succeeded", "status": "True"}]}),
        ("trainjob", "TrainJob", {"conditions": [{"type": "Complete", "status": "True"}]}),
    ],
)
def test_a_job_runs_as_one_object_and_ends_as_the_operator_says(
    sessions: sessionmaker[Session],
    kubelet: LocalKubelet,
    tmp_path: Path,
    operator: str,
    kind: str,
    done: Manifest,
) -> None:
    job_id = submit(sessions, tmp_path)
    one = names(job_id)[0]
    running = Running(sessions, job_id, kubelet, operator)
    obj = applied(kubelet, kind)
    assert obj["metadata"]["namespace"] == NAMESPACE
    text = str(obj)
    assert "abc123" in text  # the job's MLflow run reaches the workers
    assert "s3cr3t" not in text  # the secret by reference only
    assert "WAREHOUSE_TOKEN" in text
    kubelet.statuses[obj["metadata"]["name"]] = done
    result = running.finish()
    assert result.outcome.value == "succeeded"
    assert state_of(sessions, job_id) == (
        "succeeded",
        f"{kind} {NAMESPACE}/{one} succeeded",
        1,
    )


def test_the_operators_failure_reason_is_the_jobs(
    sessions: sessionmaker[Session], kubelet: LocalKubelet, tmp_path: Path
) -> None:
    job_id = submit(sessions, tmp_path)
    running = Running(sessions, job_id, kubelet, "pytorchjob")
    obj = applied(kubelet, "PyTorchJob")
    kubelet.statuses[obj["metadata"]["name"]] = {
        "conditions": [
            {
                "type": "Failed",
                "status": "True",
                "reason": "PyTorchJobFailed",
                "message": "PyTorchJob fraud/train-churn has failed because "
                "1 Worker replica(s) failed.",
            }
        ]
    }
    assert running.finish().outcome.value == "failed"
    state, reason, attempts = state_of(sessions, job_id)
    assert state == "failed"
    assert "1 Worker replica(s) failed" in reason
    assert attempts == 1


def test_cancelling_a_job_deletes_its_object(
    sessions: sessionmaker[Session], kubelet: LocalKubelet, tmp_path: Path
) -> None:
    job_id = submit(sessions, tmp_path)
    running = Running(sessions, job_id, kubelet, "pytorchjob")
    applied(kubelet, "PyTorchJob")
    jobs.request_cancel(sessions, job_id)
    assert running.finish().outcome.value == "cancelled"
    assert not [key for key in kubelet.objects_by_key if key[1] == "PyTorchJob"]
    assert state_of(sessions, job_id)[0] == "cancelled"


def names(job_id: str) -> tuple[str, str]:
    """The job's objects of its first and second attempts."""
    return f"train-churn-{job_id[-8:]}", f"train-churn-{job_id[-8:]}-2"


def operator_pod(
    payload: str,
    job: str,
    rank: int,
    termination_message: str | None = None,
    kind: str = "PyTorchJob",
) -> dict[str, Any]:
    """A recorded pod as the operator's pod of ``rank`` in the ``kind`` named ``job``
    (a TrainJob's pods are its JobSet's, one Indexed Job of nodes)."""
    pod: dict[str, Any] = copy.deepcopy(json.loads((PAYLOADS / f"{payload}.json").read_text()))
    pod["metadata"] |= {"name": f"{job}-{rank}", "namespace": NAMESPACE}
    if kind == "TrainJob":
        pod["metadata"]["labels"] = {
            "jobset.sigs.k8s.io/jobset-name": job,
            "batch.kubernetes.io/job-completion-index": str(rank),
        }
    else:
        pod["metadata"]["labels"] = {
            "training.kubeflow.org/job-name": job,
            "training.kubeflow.org/replica-type": "master" if rank == 0 else "worker",
            "training.kubeflow.org/replica-index": str(max(rank - 1, 0)),
        }
    if termination_message is not None:
        (status,) = pod["status"]["containerStatuses"]
        status["state"]["terminated"]["message"] = termination_message
    return pod


def applied_named(kubelet: LocalKubelet, name: str, kind: str = "PyTorchJob") -> Manifest:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for key, obj in list(kubelet.objects_by_key.items()):
            if key[1] == kind and key[3] == name:
                return obj
        time.sleep(0.02)
    raise AssertionError(f"no {kind} {name} was applied")


def attempt_reasons(sessions: sessionmaker[Session], job_id: str) -> list[str]:
    with sessions() as session:
        return [attempt.reason for attempt in jobs.attempts_of(session, job_id)]


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ("pod-oomkilled", "out of memory"),
        ("pod-evicted", "evicted"),
        ("pod-preempted", "preempted"),
        ("pod-node-lost", "node lost"),
        ("pod-device-failure", "device failure"),
    ],
)
def test_a_worker_the_cluster_took_is_retried_as_a_new_object(
    sessions: sessionmaker[Session],
    kubelet: LocalKubelet,
    tmp_path: Path,
    payload: str,
    fragment: str,
) -> None:
    job_id = submit(sessions, tmp_path)
    one, two = names(job_id)
    running = Running(sessions, job_id, kubelet, "pytorchjob")
    applied_named(kubelet, one)
    kubelet.operator_pods.extend(  # at once: the peer fails because rank 1 is gone
        [operator_pod("pod-user-error", one, 2), operator_pod(payload, one, 1)]
    )
    second = applied_named(kubelet, two)
    assert ("kubeflow.org/v1", "PyTorchJob", NAMESPACE, one) not in (
        kubelet.objects_by_key
    )  # the first attempt's gang was stopped
    assert second["spec"]["runPolicy"]["backoffLimit"] == 0  # restarts are modelyard's
    kubelet.statuses[two] = SUCCEEDED
    assert running.finish().outcome.value == "succeeded"
    first, last = attempt_reasons(sessions, job_id)
    # The rank the cluster took is the cause, not the peer that failed after it.
    assert f"PyTorchJob {NAMESPACE}/{one}: rank 1 failed: {fragment}" in first
    assert last == f"PyTorchJob {NAMESPACE}/{two} succeeded"


KEY_ERROR = json.dumps({"error_type": "builtins.KeyError", "message": "'label'"})
# The user's own exception, from a package that happens to be called kubernetes.
API_ERROR = json.dumps(
    {"error_type": "kubernetes.client.exceptions.ApiException", "message": "(503)"}
)


@pytest.mark.parametrize(
    ("policy", "report", "retried", "why"),
    [
        (FailurePolicy(backoff=0), KEY_ERROR, False, "raised builtins.KeyError: 'label'"),
        # A script leaves no report: its exit code is all there is to judge.
        (FailurePolicy(backoff=0), "", False, "exited with code 1"),
        (FailurePolicy(backoff=0, retry_on_exit_codes=(1,)), "", True, "exited with code 1"),
        (
            FailurePolicy(backoff=0, retry_on_exceptions=("KeyError",)),
            KEY_ERROR,
            True,
            "raised builtins.KeyError: 'label'",
        ),
        (
            FailurePolicy(backoff=0, retry_on_exceptions=("ValueError",)),
            KEY_ERROR,
            False,
            "raised builtins.KeyError: 'label'",
        ),
        (
            FailurePolicy(backoff=0, retry_on_exceptions=("ApiException",)),
            API_ERROR,
            True,
            "raised kubernetes.client.exceptions.ApiException: (503)",
        ),
    ],
)
def test_a_workers_own_failure_is_judged_by_the_failure_policy(
    sessions: sessionmaker[Session],
    kubelet: LocalKubelet,
    tmp_path: Path,
    policy: FailurePolicy,
    report: str,
    retried: bool,
    why: str,
) -> None:
    job_id = submit(sessions, tmp_path, policy)
    one, two = names(job_id)
    running = Running(sessions, job_id, kubelet, "pytorchjob")
    applied_named(kubelet, one)
    kubelet.operator_pods.append(operator_pod("pod-user-error", one, 0, report))
    if retried:
        applied_named(kubelet, two)
        kubelet.statuses[two] = SUCCEEDED
    result = running.finish()
    assert result.outcome.value == ("succeeded" if retried else "failed")
    reasons = attempt_reasons(sessions, job_id)
    assert len(reasons) == (2 if retried else 1)
    assert reasons[0] == f"PyTorchJob {NAMESPACE}/{one}: rank 0 {why}"


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ("pod-image-pull-backoff", "cannot be pulled"),
        ("pod-create-container-config-error", "cannot be configured"),
    ],
)
def test_what_no_retry_can_mend_fails_the_job_at_once(
    sessions: sessionmaker[Session],
    kubelet: LocalKubelet,
    tmp_path: Path,
    payload: str,
    fragment: str,
) -> None:
    job_id = submit(sessions, tmp_path, FailurePolicy(backoff=0, backoff_limit=5))
    one = names(job_id)[0]
    running = Running(sessions, job_id, kubelet, "pytorchjob")
    applied_named(kubelet, one)
    kubelet.operator_pods.append(operator_pod(payload, one, 0))
    assert running.finish().outcome.value == "failed"
    (reason,) = attempt_reasons(sessions, job_id)
    assert fragment in reason
    assert not [key for key in kubelet.objects_by_key if key[1] == "PyTorchJob"]


def test_the_backoff_limit_ends_the_retries(
    sessions: sessionmaker[Session], kubelet: LocalKubelet, tmp_path: Path
) -> None:
    job_id = submit(sessions, tmp_path, FailurePolicy(backoff=0, backoff_limit=1))
    one, two = names(job_id)
    running = Running(sessions, job_id, kubelet, "pytorchjob")
    for name in (one, two):
        applied_named(kubelet, name)
        kubelet.operator_pods.append(operator_pod("pod-oomkilled", name, 0))
    assert running.finish().outcome.value == "failed"
    state, reason, attempts = state_of(sessions, job_id)
    assert (state, attempts) == ("failed", 2)
    assert reason.endswith("backoff limit of 1 reached")
    assert "out of memory" in reason


def test_rank_zeros_result_comes_back_from_its_termination_message(
    sessions: sessionmaker[Session], kubelet: LocalKubelet, tmp_path: Path
) -> None:
    job_id = submit(sessions, tmp_path)
    one = names(job_id)[0]
    running = Running(sessions, job_id, kubelet, "pytorchjob")
    applied_named(kubelet, one)
    for rank, result in ((1, "not rank 0"), (0, {"auc": 0.93})):
        report = json.dumps({"result": result})
        kubelet.operator_pods.append(operator_pod("pod-succeeded", one, rank, report))
    kubelet.statuses[one] = SUCCEEDED
    assert running.finish().result == {"auc": 0.93}


def test_a_trainjobs_node_the_cluster_took_is_retried_from_a_new_trainjob(
    sessions: sessionmaker[Session], kubelet: LocalKubelet, tmp_path: Path
) -> None:
    job_id = submit(sessions, tmp_path)
    one, two = names(job_id)
    running = Running(sessions, job_id, kubelet, "trainjob")
    applied_named(kubelet, one, "TrainJob")
    initializer = operator_pod("pod-oomkilled", one, 0, kind="TrainJob")
    initializer["metadata"]["labels"]["jobset.sigs.k8s.io/replicatedjob-name"] = "model-initializer"
    node = operator_pod("pod-oomkilled", one, 2, kind="TrainJob")
    node["metadata"]["labels"]["jobset.sigs.k8s.io/replicatedjob-name"] = "node"
    kubelet.operator_pods.extend([initializer, node])  # only a node's end is a rank's
    applied_named(kubelet, two, "TrainJob")
    kubelet.statuses[two] = {"conditions": [{"type": "Complete", "status": "True"}]}
    assert running.finish().outcome.value == "succeeded"
    first, _ = attempt_reasons(sessions, job_id)
    assert first.startswith(f"TrainJob {NAMESPACE}/{one}: rank 2 failed: out of memory")


def test_jobs_of_one_name_each_have_objects_of_their_own(
    sessions: sessionmaker[Session], kubelet: LocalKubelet, tmp_path: Path
) -> None:
    first, second = submit(sessions, tmp_path), submit(sessions, tmp_path)
    running = [Running(sessions, job_id, kubelet, "pytorchjob") for job_id in (first, second)]
    for job_id in (first, second):
        kubelet.statuses[applied_named(kubelet, names(job_id)[0])["metadata"]["name"]] = SUCCEEDED
    assert [r.finish().outcome.value for r in running] == ["succeeded", "succeeded"]
    assert names(first)[0] != names(second)[0]


def test_a_failing_call_to_the_api_server_is_tried_again(
    sessions: sessionmaker[Session],
    kubelet: LocalKubelet,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = submit(sessions, tmp_path)
    calls = {"get": 0}
    real_get = kubelet.get

    def flaky_get(*args: str) -> Manifest | None:
        calls["get"] += 1
        if calls["get"] <= 3:
            raise ConnectionError("the API server is restarting")
        return real_get(*args)

    monkeypatch.setattr(kubelet, "get", flaky_get)
    running = Running(sessions, job_id, kubelet, "pytorchjob")
    kubelet.statuses[names(job_id)[0]] = SUCCEEDED
    assert running.finish().outcome.value == "succeeded"
    assert calls["get"] > 3
    assert state_of(sessions, job_id)[2] == 1
