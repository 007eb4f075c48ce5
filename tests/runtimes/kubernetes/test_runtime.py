"""The Kubernetes runtime end to end on a one-node stand-in (``kubelet.py``): real
pipelines whose task attempts become Jobs, validated as the API server would, whose pods
run the rendered command as local processes, and whose outcomes come back through the
termination message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from modelyard.artifacts import ArtifactStore
from modelyard.pipelines.engine import EngineSettings, RunEngine
from modelyard.runtimes.kubernetes.runtime import KubernetesRuntime
from modelyard.runtimes.kubernetes.settings import ArtifactStorage, ClusterSettings
from modelyard.specs.runs import RunState, TaskState
from modelyard.store.db import session_factory
from modelyard.store.models import TaskAttempt
from tests.pipelines import flows
from tests.pipelines.conftest import Runner
from tests.runtimes.kubernetes import flows as k8s_flows
from tests.runtimes.kubernetes.conftest import SECRET, new_project
from tests.runtimes.kubernetes.kubelet import LocalKubelet

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.parametrize("engine", ["sqlite"], indirect=True),  # the store is not the point
]


@pytest.fixture
def k8s(engine: Engine, kubelet: LocalKubelet, tmp_path: Path) -> Iterator[Runner]:
    sessions = session_factory(engine)
    project_id = new_project(sessions, "fraud")
    store = ArtifactStore(str(tmp_path / "artifacts"))
    runtime = KubernetesRuntime(
        ClusterSettings(artifacts=ArtifactStorage(url=store.url, credentials_secret=None)),
        cluster=kubelet,
        poll_seconds=0.05,
        platform_namespace="ml-platform",
    )
    run_engine = RunEngine(
        sessions,
        runtime,
        store,
        EngineSettings(artifacts_url=store.url, logs_dir=tmp_path / "logs"),
        # The engine's own copy of a secret; pods must get the cluster's, by reference.
        secrets=lambda _project, names: {name: "from-the-engine" for name in names},
    )
    trace_dir = tmp_path / "trace"
    trace_dir.mkdir()
    yield Runner(run_engine, sessions, project_id, store, trace_dir, "kubernetes")
    run_engine.close()
    runtime.close()


def test_a_pipeline_runs_as_one_job_per_task_attempt(k8s: Runner, kubelet: LocalKubelet) -> None:
    run_id, state = k8s.run(flows.squares, trace_dir=str(k8s.trace_dir), n=3, threshold=1)
    assert state is RunState.SUCCEEDED, k8s.states(run_id)
    assert k8s.value(run_id, "add_up") == 0 + 1 + 4
    jobs = [obj for obj in kubelet.applied if obj["kind"] == "Job"]
    # numbers, 4 squares, the parent's own record, add_up, is_large, shout: one Job each
    assert {job["metadata"]["labels"]["modelyard.io/task"] for job in jobs} >= {
        "numbers",
        "square-0",
        "square-2",
        "add_up",
    }
    for job in jobs:
        assert job["spec"]["backoffLimit"] == 0
        assert job["metadata"]["namespace"] == "modelyard-fraud"
    kinds = {obj["kind"] for obj in kubelet.applied}
    assert {"Namespace", "ResourceQuota", "LimitRange"} <= kinds  # the project, first
    bindings = [obj for obj in kubelet.applied if obj["kind"] == "RoleBinding"]
    assert {s["namespace"] for b in bindings for s in b["subjects"]} == {"ml-platform"}
    assert not [key for key in kubelet.objects_by_key if key[1] == "Job"]  # read, then deleted
    with k8s.sessions() as session:
        attempt = session.scalars(
            select(TaskAttempt).where(TaskAttempt.task_run_id == k8s.tasks(run_id)["add_up"].id)
        ).one()
    assert '"kind": "succeeded"' in Path(attempt.log_path).read_text()  # the pod's stdout


def test_a_raising_task_fails_with_its_exception(k8s: Runner) -> None:
    run_id, state = k8s.run(flows.picky_flow, trace_dir=str(k8s.trace_dir))
    assert state is RunState.FAILED
    task_run = k8s.tasks(run_id)["picky"]
    assert task_run.state == TaskState.FAILED
    assert task_run.error is not None
    assert task_run.error["type"] == "builtins.ValueError"
    assert "a bug, not a blip" in task_run.error["message"]
    assert k8s.executions("picky") == 1  # not listed for retry: failed at once


def test_a_crashed_pod_is_retried_on_its_exit_code(k8s: Runner) -> None:
    run_id, state = k8s.run(flows.dying_flow, trace_dir=str(k8s.trace_dir))
    assert state is RunState.SUCCEEDED, k8s.states(run_id)
    assert k8s.executions("dies") == 2
    assert k8s.value(run_id, "dies") == "survived"


def test_a_deadline_fails_the_task_as_timed_out(k8s: Runner) -> None:
    run_id, state = k8s.run(flows.hanging_flow, seconds=30.0)
    assert state is RunState.FAILED
    tasks = k8s.tasks(run_id)
    assert tasks["hangs"].state == TaskState.FAILED
    assert tasks["after_hang"].state == TaskState.UPSTREAM_FAILED


def test_secrets_reach_the_pod_by_reference_only(k8s: Runner, kubelet: LocalKubelet) -> None:
    spec = k8s_flows.secret_flow.spec("tests/runtimes/kubernetes/flows.py:secret_flow")
    run_id = k8s.engine.create_run(k8s.project_id, spec, {}, runtime="kubernetes")
    assert k8s.engine.execute(run_id) is RunState.SUCCEEDED
    assert k8s.value(run_id, "reads_secret") == "from-the-cluster"
    job = next(obj for obj in kubelet.applied if obj["kind"] == "Job")
    assert "from-the-engine" not in str(job)
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {
        "name": "WAREHOUSE_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": SECRET[0], "key": SECRET[1]}},
    } in env


def test_a_missing_secret_fails_the_attempt_without_retrying(
    k8s: Runner, kubelet: LocalKubelet
) -> None:
    kubelet.secrets.clear()
    spec = k8s_flows.secret_flow.spec("tests/runtimes/kubernetes/flows.py:secret_flow")
    run_id = k8s.engine.create_run(k8s.project_id, spec, {}, runtime="kubernetes")
    assert k8s.engine.execute(run_id) is RunState.FAILED
    error = k8s.tasks(run_id)["reads_secret"].error
    assert error is not None
    assert "WAREHOUSE_TOKEN" in error["message"]
