"""Deployments for real: the controller runs a router and ``modelyard serve`` replicas as
processes; traffic goes through the router while a canary is promoted, a broken canary
is rolled back on its own, a shadow is compared, a blue-green candidate is switched to,
a killed replica is replaced, a restarted controller adopts what runs, and deleting stops
it all."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelyard.auth.principal import LOCAL_ORIGIN, Principal
from modelyard.config import Settings
from modelyard.services.context import ServiceContext
from modelyard.services.deployments import DeploymentService, live_stats
from modelyard.serving import deployments as deploys
from modelyard.serving import processes
from modelyard.serving.controller import DeploymentController, stop_all
from modelyard.specs.deployments import (
    DeploymentSpec,
    DeploymentUpdate,
    RollbackRequest,
    RolloutPolicy,
    Scaling,
    Variant,
)
from modelyard.store import migrate
from modelyard.store.db import create_store_engine, session_factory, transaction
from modelyard.store.models import Deployment, Project, Replica
from tests.serving.slow_model import save_models

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ADMIN = Principal(user_id="admin", name="admin", is_superuser=True, via="local")


@pytest.fixture
def models(tmp_path: Path) -> dict[str, str]:
    return save_models(tmp_path / "models")


@pytest.fixture
def platform(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[sessionmaker[Session], DeploymentController]]:
    # Replicas unpickle the test models from this repository's tests package.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    settings.home.mkdir(parents=True)
    engine = create_store_engine(settings.resolved_database_url)
    migrate.upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        session.add(Project(name="bank", created_by="admin"))
    controller = DeploymentController(settings, sessions, poll_seconds=0.25)
    controller.start()
    try:
        yield sessions, controller
    finally:
        controller.stop()
        stop_all(sessions)
        engine.dispose()


def act(
    sessions: sessionmaker[Session], settings: Settings, call: Callable[[DeploymentService], Any]
) -> Any:
    with transaction(sessions) as session:
        return call(DeploymentService(ServiceContext(session, ADMIN, LOCAL_ORIGIN, settings)))


def state(sessions: sessionmaker[Session]) -> tuple[Deployment, list[Replica], Any]:
    with sessions() as session:
        deployment = session.scalars(select(Deployment)).one()
        replicas = list(session.scalars(select(Replica)))
        spec = deploys.spec_of(deploys.current_revision(session, deployment))
        session.expunge_all()
        return deployment, replicas, spec


def wait_for(check: Callable[[], bool], timeout: float = 90.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.2)


class Traffic:
    """Clients sending requests through the router in the background."""

    def __init__(self, url: str, x: float) -> None:
        self.url = url
        self.x = x
        self.answers: list[tuple[int, str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                try:
                    answer = client.post(
                        f"{self.url}/invocations", json={"inputs": {"x": [self.x]}}
                    )
                except httpx.HTTPError as exc:
                    self.answers.append((0, "", repr(exc)))
                    continue
                variant = answer.headers.get("x-modelyard-variant", "")
                self.answers.append((answer.status_code, variant, answer.text))
                time.sleep(0.01)

    def stop(self) -> list[tuple[int, str, Any]]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.answers


def predict(url: str, x: float, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/invocations", json={"inputs": {"x": [x]}}, headers=headers)


def test_a_deployment_rolls_out_rolls_back_heals_and_is_adopted(
    platform: tuple[sessionmaker[Session], DeploymentController],
    settings: Settings,
    models: dict[str, str],
) -> None:
    sessions, controller = platform
    spec = DeploymentSpec(
        name="fare",
        variants=(Variant(name="primary", model=models["double"]),),
        rollout=RolloutPolicy(steps=(50, 100), window=timedelta(seconds=2), min_requests=20),
    )
    act(sessions, settings, lambda s: s.create("bank", spec))
    wait_for(lambda: state(sessions)[0].state == deploys.READY, what="the first replica")
    deployment, replicas, _ = state(sessions)
    url = deploys.endpoint_of(deployment)
    assert predict(url, 0.2).json() == {"predictions": [0.4]}
    # The model server serves the model under the deployment's name (V2 too).
    v2 = httpx.post(
        f"{url}/v2/models/fare/infer",
        json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [0.25]}]},
    )
    assert v2.json()["outputs"][0]["data"] == [0.5]

    # -- a healthy canary advances 50% -> 100% under live traffic and is promoted.
    traffic = Traffic(url, 0.3)
    act(
        sessions,
        settings,
        lambda s: s.update("bank", "fare", DeploymentUpdate(model=models["triple"])),
    )
    wait_for(
        lambda: (
            state(sessions)[0].rollout is None
            and state(sessions)[2].variant("primary").model == models["triple"]
        ),
        what="the canary's promotion",
    )
    answers = traffic.stop()
    assert {status for status, _, _ in answers} == {200}
    assert {"canary", "primary"} <= {variant for _, variant, _ in answers}
    with sessions() as session:
        changes = [r.change for r in deploys.revisions_of(session, deployment.id)]
    assert changes[0].startswith("canary promoted: healthy over")
    assert changes[1].startswith("canary ")
    assert changes[1].endswith(": 50%")
    wait_for(lambda: predict(url, 0.3).json() == {"predictions": [0.8999999999999999]})

    # -- a broken canary is rolled back on its own, with the reason on its revisions.
    traffic = Traffic(url, 0.7)
    act(
        sessions,
        settings,
        lambda s: s.update("bank", "fare", DeploymentUpdate(model=models["broken"])),
    )
    wait_for(lambda: state(sessions)[0].rollout is None, what="the broken canary's rollback")
    answers = traffic.stop()
    assert any(status == 500 and variant == "canary" for status, variant, _ in answers)
    deployment, _, spec_now = state(sessions)
    assert [v.name for v in spec_now.variants] == ["primary"]
    assert spec_now.variant("primary").model == models["triple"]
    with sessions() as session:
        revisions = deploys.revisions_of(session, deployment.id)
    assert revisions[0].change.startswith("rolled back")
    assert "error rate" in revisions[0].change
    assert revisions[1].status == deploys.ROLLED_BACK
    assert "error rate" in revisions[1].reason
    wait_for(lambda: predict(url, 0.7).json() == {"predictions": [2.0999999999999996]})

    # -- a shadow gets copies; the client sees only the primary; the comparison shows.
    act(
        sessions,
        settings,
        lambda s: s.update("bank", "fare", DeploymentUpdate(shadow=models["double"])),
    )
    wait_for(
        lambda: any(r.variant == "shadow" and r.state == "ready" for r in state(sessions)[1]),
        what="the shadow replica",
    )
    time.sleep(1)  # the router reads the new routes
    for _ in range(10):
        answer = predict(url, 0.5)
        assert answer.json() == {"predictions": [1.5]}
        assert answer.headers["x-modelyard-variant"] == "primary"
    wait_for(lambda: live_stats(state(sessions)[0])["shadow"]["disagree"] >= 10)
    act(sessions, settings, lambda s: s.update("bank", "fare", DeploymentUpdate(shadow="")))

    # -- blue-green: the candidate answers by header only, then takes everything at once.
    act(
        sessions,
        settings,
        lambda s: s.update(
            "bank", "fare", DeploymentUpdate(model=models["double"], strategy="blue-green")
        ),
    )
    wait_for(
        lambda: any(r.variant == "candidate" and r.state == "ready" for r in state(sessions)[1]),
        what="the blue-green candidate",
    )
    time.sleep(1)
    assert {predict(url, 0.5).json()["predictions"][0] for _ in range(10)} == {1.5}
    assert predict(url, 0.5, **{"x-modelyard-variant": "candidate"}).json() == {
        "predictions": [1.0]
    }
    act(sessions, settings, lambda s: s.promote("bank", "fare"))
    wait_for(lambda: predict(url, 0.5).json() == {"predictions": [1.0]}, what="the switch")
    wait_for(
        lambda: len(state(sessions)[1]) == 1 and state(sessions)[0].state == deploys.READY,
        what="the old replicas to stop",
    )

    # -- a killed replica is replaced.
    _, replicas, _ = state(sessions)
    killed = replicas[0].pid
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    wait_for(
        lambda: [r.pid for r in state(sessions)[1] if r.state == "ready"] not in ([], [killed]),
        what="a replacement replica",
    )
    assert predict(url, 0.5).json() == {"predictions": [1.0]}

    # -- a restarted controller adopts the router and replicas instead of duplicating.
    deployment, replicas, _ = state(sessions)
    before = (deployment.router_pid, sorted(r.pid or 0 for r in replicas))
    controller.stop()
    again = DeploymentController(settings, sessions, poll_seconds=0.25)
    for _ in range(4):
        again.reconcile()
    deployment, replicas, _ = state(sessions)
    assert (deployment.router_pid, sorted(r.pid or 0 for r in replicas)) == before
    assert predict(url, 0.5).json() == {"predictions": [1.0]}

    # -- back to the revision that served "triple", then delete: the processes stop.
    with sessions() as session:
        target = next(
            r.number
            for r in deploys.revisions_of(session, deployment.id)
            if r.change.startswith("rolled back")
        )
    act(sessions, settings, lambda s: s.rollback("bank", "fare", RollbackRequest(revision=target)))
    wait_for(
        lambda: (again.reconcile() or True) and predict(url, 0.5).json() == {"predictions": [1.5]},
        what="the rollback to triple",
    )
    deployment, replicas, _ = state(sessions)
    act(sessions, settings, lambda s: s.delete("bank", "fare"))
    again.reconcile()
    again.stop()
    with sessions() as session:
        assert session.scalars(select(Deployment)).first() is None
    assert not processes.running(deployment.router_pid, deployment.port)
    for replica in replicas:
        assert not processes.running(replica.pid, replica.port)


def test_replicas_scale_with_inflight_requests_down_to_zero_and_back(
    platform: tuple[sessionmaker[Session], DeploymentController],
    settings: Settings,
    models: dict[str, str],
) -> None:
    sessions, _ = platform
    spec = DeploymentSpec(
        name="fare",
        variants=(Variant(name="primary", model=models["double"]),),
        scaling=Scaling(
            min_replicas=0,
            max_replicas=2,
            target_inflight=1,
            scale_down_window=timedelta(seconds=2),
            idle_before_zero=timedelta(seconds=3),
        ),
    )
    act(sessions, settings, lambda s: s.create("bank", spec))
    wait_for(lambda: state(sessions)[0].state == deploys.READY, what="the first replica")
    url = deploys.endpoint_of(state(sessions)[0])

    # Four clients whose requests each take 1.2 s: about four in flight on one replica.
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            assert predict(url, 1.2).status_code == 200

    clients = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for thread in clients:
        thread.start()
    wait_for(lambda: state(sessions)[0].replicas == {"primary": 2}, what="the scale-up")
    wait_for(
        lambda: sum(r.state == "ready" for r in state(sessions)[1]) == 2,
        what="the second replica",
    )
    stop.set()
    for thread in clients:
        thread.join(timeout=10)

    # Idle: down to one after the scale-down window, to none after idle_before_zero.
    wait_for(lambda: state(sessions)[0].replicas == {"primary": 1}, what="the scale-down")
    wait_for(lambda: state(sessions)[1] == [], what="the scale to zero")
    wait_for(
        lambda: live_stats(state(sessions)[0])["variants"]["primary"]["replicas"] == 0,
        what="the router to see no replica",
    )
    assert state(sessions)[0].state == deploys.READY  # scaled to zero is not a failure

    # A request to a variant at zero waits while a replica starts, then is answered.
    started = time.monotonic()
    answer = httpx.post(f"{url}/invocations", json={"inputs": {"x": [0.2]}}, timeout=60)
    assert answer.json() == {"predictions": [0.4]}
    assert time.monotonic() - started > 0.5  # it did wait for a cold start
    assert state(sessions)[0].replicas == {"primary": 1}


def test_a_router_that_cannot_start_fails_the_deployment_with_its_reason(
    platform: tuple[sessionmaker[Session], DeploymentController],
    settings: Settings,
    models: dict[str, str],
) -> None:
    sessions, _ = platform
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        spec = DeploymentSpec(
            name="fare", variants=(Variant(name="primary", model=models["double"]),)
        )
        act(sessions, settings, lambda s: s.create("bank", spec, port))
        wait_for(lambda: state(sessions)[0].state == deploys.FAILED, what="the failure")
        reason = state(sessions)[0].reason
    assert f"the router on port {port} exited" in reason
    assert "address already in use" in reason
