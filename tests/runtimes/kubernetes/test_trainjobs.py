"""Training jobs on Kubernetes through the job store: the job's gang is one PyTorchJob
(or TrainJob) whose end, as the operator reports it, is the job's attempt. The cluster
is the one-node stand-in: objects are validated as the API server would, and the test
writes the status the training operator would."""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from modelyard.runtimes.kubernetes.settings import ClusterSettings
from modelyard.runtimes.kubernetes.trainjobs import KubernetesGangLauncher
from modelyard.specs.training import TrainingJobSpec
from modelyard.store.db import transaction
from modelyard.training import jobs
from modelyard.training.launch import JobResult
from tests.runtimes.kubernetes.conftest import new_project
from tests.runtimes.kubernetes.kubelet import LocalKubelet, Manifest

pytestmark = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)

NAMESPACE = "modelyard-fraud"


def submit(sessions: sessionmaker[Session], tmp_path: Path) -> str:
    spec = TrainingJobSpec(
        name="churn",
        entrypoint="train:main",
        workers=3,
        secrets=("WAREHOUSE_TOKEN",),
        runtime="kubernetes",
    )
    project_id = new_project(sessions, "fraud")
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
        f"{kind} {NAMESPACE}/train-churn succeeded",
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
