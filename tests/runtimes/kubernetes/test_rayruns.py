"""Ray runs from a platform on Kubernetes: the run executor hands each to a RayJob whose
driver drives it. On the one-node stand-in the driver runs for real, on the session's
second Ray head, as KubeRay would run it on its head with ``RAY_ADDRESS`` set."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from modelyard.artifacts import ArtifactStore
from modelyard.config import Settings
from modelyard.pipelines.engine import EngineSettings, RunEngine
from modelyard.pipelines.executor import RunExecutor
from modelyard.pipelines.loader import load_pipeline
from modelyard.pipelines.runs import claim, request_cancel
from modelyard.runtimes.kubernetes.rayruns import RayJobRuns, driver_owner
from modelyard.runtimes.kubernetes.settings import ArtifactStorage, ClusterSettings
from modelyard.runtimes.local.pool import WorkerPool
from modelyard.specs.runs import RunState
from modelyard.store.models import PipelineRun, TaskRun
from tests.runtimes.kubernetes.conftest import new_project
from tests.runtimes.kubernetes.kubelet import LocalKubelet

pytestmark = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)

NAMESPACE = "modelyard-fraud"
PAYLOADS = Path(__file__).parent / "payloads"
FLOW = "tests/pipelines/flows.py:cluster_flow"


@pytest.fixture
def run_engine(sessions: sessionmaker[Session], tmp_path: Path) -> Iterator[RunEngine]:
    """The controllers' engine (its pool never runs a task of these runs)."""
    store = ArtifactStore(str(tmp_path / "artifacts"))
    with WorkerPool(1, stop_grace=1.0) as pool:
        engine = RunEngine(
            sessions,
            pool,
            store,
            EngineSettings(artifacts_url=store.url, logs_dir=tmp_path / "logs"),
        )
        yield engine
        engine.close()


def cluster_settings(tmp_path: Path) -> ClusterSettings:
    return ClusterSettings(
        artifacts=ArtifactStorage(url=str(tmp_path / "artifacts"), credentials_secret=None)
    )


def queue_run(engine: RunEngine, runtime: str = "ray") -> str:
    project_id = new_project(engine.sessions, "fraud")
    spec = load_pipeline(FLOW).spec(FLOW)
    return engine.create_run(project_id, spec, {}, runtime=runtime)


def wait_for(predicate: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def run_row(engine: RunEngine, run_id: str) -> PipelineRun:
    with engine.sessions() as session:
        row = session.get(PipelineRun, run_id)
        assert row is not None
        return row


def rayjobs(kubelet: LocalKubelet) -> list[dict[str, Any]]:
    return [obj for key, obj in list(kubelet.objects_by_key.items()) if key[1] == "RayJob"]


@pytest.mark.integration
@pytest.mark.slow
def test_a_ray_run_is_a_rayjob_whose_driver_runs_it_on_that_ray(
    run_engine: RunEngine, ray_head: tuple[str, int], settings: Settings, tmp_path: Path
) -> None:
    _, gcs_port = ray_head
    address = f"127.0.0.1:{gcs_port}"
    database = settings.resolved_database_url
    kubelet = LocalKubelet(
        tmp_path / "node",
        secrets={("modelyard-driver", "MODELYARD_DATABASE_URL"): database},
        ray_address=address,
    )
    run_id = queue_run(run_engine)
    delegate = RayJobRuns(run_engine, cluster_settings(tmp_path), kubelet, poll_seconds=0.05)
    executor = RunExecutor(run_engine, capacity=1, poll_seconds=0.05, delegate=delegate)
    executor.start()
    try:
        wait_for(lambda: rayjobs(kubelet))
        (rayjob,) = rayjobs(kubelet)
        assert rayjob["metadata"]["namespace"] == NAMESPACE
        assert rayjob["spec"]["entrypoint"] == (
            f"modelyard runs drive {run_id} --owner {driver_owner(run_id)} --workers 1"
        )
        wait_for(lambda: RunState(run_row(run_engine, run_id).state).finished, seconds=120)
        log = (tmp_path / "node" / rayjob["metadata"]["name"] / "log").read_text()
        assert run_row(run_engine, run_id).state == RunState.SUCCEEDED, log
        with run_engine.sessions() as session:
            (task,) = session.query(TaskRun).filter_by(run_id=run_id).all()
            assert task.output is not None
        # The task ran on the Ray the RayJob's driver was given.
        ref = task.output["ref"]["digest"]
        assert run_engine.store.get_json(ref).endswith(f":{gcs_port}")
        wait_for(lambda: not rayjobs(kubelet))  # deleted once the run has ended
        assert run_row(run_engine, run_id).owner is None
    finally:
        executor.stop()
        kubelet.close()


@pytest.mark.parametrize("payload", ["rayjob-submission-failed", "rayjob-failed"])
def test_a_rayjob_that_ends_before_its_run_fails_the_run_with_its_reason(
    run_engine: RunEngine, kubelet: LocalKubelet, tmp_path: Path, payload: str
) -> None:
    run_id = queue_run(run_engine)
    delegate = RayJobRuns(run_engine, cluster_settings(tmp_path), kubelet, poll_seconds=0.02)
    stop = threading.Event()
    assert delegate.handles(run_id)
    assert claim(run_engine.sessions, run_id, run_engine.owner)  # as the executor claims it
    ended: list[RunState] = []
    thread = threading.Thread(target=lambda: ended.append(delegate.drive(run_id, stop)))
    thread.start()
    wait_for(lambda: rayjobs(kubelet))
    (rayjob,) = rayjobs(kubelet)
    assert run_row(run_engine, run_id).owner == driver_owner(run_id)  # handed to the driver
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    for labelled in (rayjob, head):  # kubectl finds the run's RayJob and pods by it
        assert labelled["metadata"]["labels"]["modelyard.io/run"] == run_id
    status = json.loads((PAYLOADS / f"{payload}.json").read_text())["status"]
    kubelet.statuses[rayjob["metadata"]["name"]] = status
    thread.join(timeout=30)
    assert ended == [RunState.FAILED]
    with run_engine.sessions() as session:
        (task,) = session.query(TaskRun).filter_by(run_id=run_id).all()
        assert task.state == "failed"
        message = task.error["message"]
    assert message.startswith(f"RayJob {NAMESPACE}/{rayjob['metadata']['name']} ended (failed)")
    assert status.get("message", "")[:40] in message
    assert not rayjobs(kubelet)  # a retry of the run gets a RayJob of its own
    assert run_row(run_engine, run_id).owner is None


def test_stopped_controllers_leave_the_rayjob_running_for_the_next_to_adopt(
    run_engine: RunEngine, kubelet: LocalKubelet, tmp_path: Path
) -> None:
    run_id = queue_run(run_engine)
    delegate = RayJobRuns(run_engine, cluster_settings(tmp_path), kubelet, poll_seconds=0.02)
    assert claim(run_engine.sessions, run_id, run_engine.owner)
    stop = threading.Event()
    stop.set()
    assert delegate.drive(run_id, stop) == RunState.QUEUED
    assert len(rayjobs(kubelet)) == 1
    # The lease stays with the driver's owner; the next executor's claim of an expired
    # lease is its engine's, and its delegate takes the run up again.
    assert run_row(run_engine, run_id).owner == driver_owner(run_id)


def test_runs_on_other_runtimes_are_driven_by_the_engine(
    run_engine: RunEngine, kubelet: LocalKubelet, tmp_path: Path
) -> None:
    delegate = RayJobRuns(run_engine, cluster_settings(tmp_path), kubelet)
    assert not delegate.handles(queue_run(run_engine, runtime="local"))


class Driving:
    """``RayJobRuns.drive`` in a thread, after the executor's claim, as the executor
    runs it."""

    def __init__(self, delegate: RayJobRuns, run_id: str) -> None:
        assert claim(delegate.engine.sessions, run_id, delegate.engine.owner)
        self.stop = threading.Event()
        self.ended: list[RunState] = []
        self.thread = threading.Thread(
            target=lambda: self.ended.append(delegate.drive(run_id, self.stop))
        )
        self.thread.start()

    def finish(self) -> RunState:
        self.thread.join(timeout=30)
        (state,) = self.ended
        return state


def task_error(engine: RunEngine, run_id: str) -> str:
    with engine.sessions() as session:
        (task,) = session.query(TaskRun).filter_by(run_id=run_id).all()
        assert task.error is not None
        return str(task.error["message"])


def test_a_rayjob_the_cluster_refuses_fails_the_run(
    run_engine: RunEngine,
    kubelet: LocalKubelet,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_apply = kubelet.apply

    def refuse_rayjobs(obj: dict[str, Any]) -> None:
        if obj["kind"] == "RayJob":
            raise PermissionError('rayjobs.ray.io is forbidden: cannot "patch"')
        real_apply(obj)

    monkeypatch.setattr(kubelet, "apply", refuse_rayjobs)
    run_id = queue_run(run_engine)
    delegate = RayJobRuns(run_engine, cluster_settings(tmp_path), kubelet, poll_seconds=0.02)
    assert Driving(delegate, run_id).finish() == RunState.FAILED
    assert "the cluster refused it: rayjobs.ray.io is forbidden" in task_error(run_engine, run_id)
    assert run_row(run_engine, run_id).owner is None


def test_a_rayjob_that_never_starts_its_driver_fails_the_run_after_the_pending_timeout(
    run_engine: RunEngine, kubelet: LocalKubelet, tmp_path: Path
) -> None:
    run_id = queue_run(run_engine)
    delegate = RayJobRuns(
        run_engine,
        cluster_settings(tmp_path),
        kubelet,
        poll_seconds=0.02,
        pending_timeout=timedelta(seconds=0.5),
    )
    driving = Driving(delegate, run_id)
    wait_for(lambda: rayjobs(kubelet))
    (rayjob,) = rayjobs(kubelet)
    status = json.loads((PAYLOADS / "rayjob-initializing.json").read_text())["status"]
    kubelet.statuses[rayjob["metadata"]["name"]] = status
    assert driving.finish() == RunState.FAILED
    message = task_error(run_engine, run_id)
    assert "did not start within 0:00:00.500000" in message
    assert not rayjobs(kubelet)


def test_a_run_cancelled_before_its_driver_starts_is_cancelled_with_its_rayjob(
    run_engine: RunEngine, kubelet: LocalKubelet, tmp_path: Path
) -> None:
    run_id = queue_run(run_engine)
    delegate = RayJobRuns(run_engine, cluster_settings(tmp_path), kubelet, poll_seconds=0.02)
    driving = Driving(delegate, run_id)
    wait_for(lambda: rayjobs(kubelet))
    request_cancel(run_engine.sessions, run_id)  # the run is leased: only asked to stop
    assert driving.finish() == RunState.CANCELLED
    assert not rayjobs(kubelet)


def test_a_retried_run_replaces_the_finished_rayjob_of_its_first_go(
    run_engine: RunEngine, kubelet: LocalKubelet, tmp_path: Path
) -> None:
    run_id = queue_run(run_engine)
    delegate = RayJobRuns(run_engine, cluster_settings(tmp_path), kubelet, poll_seconds=0.02)
    old = delegate.rayjob(run_id)
    kubelet.apply(old)  # left by a first go whose controllers stopped before its end
    status = json.loads((PAYLOADS / "rayjob-succeeded.json").read_text())["status"]
    kubelet.statuses[old["metadata"]["name"]] = status
    driving = Driving(delegate, run_id)
    wait_for(lambda: old["metadata"]["name"] not in kubelet.statuses)  # deleted
    wait_for(lambda: rayjobs(kubelet))  # and applied again, unfinished
    time.sleep(0.2)
    assert not driving.ended  # the new RayJob runs: the run is not failed by the old one
    driving.stop.set()
    assert driving.finish() == RunState.QUEUED
