"""Deployments on Kubernetes: the controllers' cluster reconciler applies each revision's
objects, gives a canary traffic only once it is available, rolls back a canary that
cannot become available, prunes what a revision no longer has, and deletes everything
with the deployment. The cluster is the one-node stand-in (``kubelet.py``): every
object is validated as the API server would; Deployments report the status the test
sets (no model-server pods run)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.orm import Session, sessionmaker

from modelyard.runtimes.kubernetes.deployments import ClusterDeploymentController
from modelyard.runtimes.kubernetes.settings import ClusterSettings
from modelyard.serving import deployments as deploys
from modelyard.specs.deployments import DeploymentSpec
from modelyard.store.db import transaction
from modelyard.store.models import Deployment
from tests.runtimes.kubernetes.conftest import new_project
from tests.runtimes.kubernetes.kubelet import LocalKubelet

pytestmark = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)

NAMESPACE = "modelyard-fraud"


@pytest.fixture
def controller(
    sessions: sessionmaker[Session], kubelet: LocalKubelet
) -> ClusterDeploymentController:
    return ClusterDeploymentController(sessions, ClusterSettings(), kubelet)


def create(sessions: sessionmaker[Session], model: str = "models:/taxi-fare/3") -> str:
    spec = DeploymentSpec.model_validate(
        {
            "name": "fare",
            "variants": [{"name": "primary", "model": model}],
            "scaling": {"min_replicas": 2, "max_replicas": 2},
        }
    )
    project_id = new_project(sessions, "fraud")
    with transaction(sessions) as session:
        deployment = Deployment(
            project_id=project_id,
            name="fare",
            revision=0,
            state=deploys.PROGRESSING,
            reason="starting",
            replicas={"primary": 2},
            port=18080,
        )
        session.add(deployment)
        session.flush()
        deploys.add_revision(session, deployment, spec, "created", None)
        return deployment.id


def state(sessions: sessionmaker[Session], deployment_id: str) -> Deployment:
    with sessions() as session:
        deployment = session.get(Deployment, deployment_id)
        assert deployment is not None
        session.expunge(deployment)
        return deployment


def routes(kubelet: LocalKubelet) -> dict[str, int]:
    config = kubelet.get("v1", "ConfigMap", NAMESPACE, "fare-routes")
    assert config is not None
    weights: dict[str, int] = json.loads(config["data"]["routes.json"])["weights"]
    return weights


def deployments(kubelet: LocalKubelet) -> set[str]:
    return {key[3] for key in kubelet.objects_by_key if key[1] == "Deployment"}


def start_canary(sessions: sessionmaker[Session], deployment_id: str, model: str) -> None:
    with transaction(sessions) as session:
        deployment = session.get(Deployment, deployment_id)
        assert deployment is not None
        spec = deploys.spec_of(deploys.current_revision(session, deployment))
        deploys.start_rollout(session, deployment, spec, model, "canary", None)


def test_a_deployment_is_applied_and_ready_once_available(
    sessions: sessionmaker[Session], kubelet: LocalKubelet, controller: ClusterDeploymentController
) -> None:
    deployment_id = create(sessions)
    kubelet.starting.add("fare-primary-")
    controller.reconcile_one(deployment_id)
    assert state(sessions, deployment_id).state == deploys.PROGRESSING
    kinds = {key[1] for key in kubelet.objects_by_key}
    assert kinds == {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap"}
    kubelet.starting.clear()
    controller.reconcile_one(deployment_id)
    ready = state(sessions, deployment_id)
    assert ready.state == deploys.READY
    assert ready.replicas == {"primary": 2}


def test_a_canary_gets_traffic_only_once_available(
    sessions: sessionmaker[Session], kubelet: LocalKubelet, controller: ClusterDeploymentController
) -> None:
    deployment_id = create(sessions)
    controller.reconcile_one(deployment_id)
    start_canary(sessions, deployment_id, "models:/taxi-fare/4")
    kubelet.starting.add("fare-canary-")
    controller.reconcile_one(deployment_id)
    assert len(deployments(kubelet)) == 3  # primary, canary, router
    assert routes(kubelet) == {"primary": 100, "canary": 0}  # its 10% waits for it
    kubelet.starting.clear()
    controller.reconcile_one(deployment_id)
    assert routes(kubelet) == {"primary": 90, "canary": 10}
    assert state(sessions, deployment_id).rollout is not None  # judged on the router's stats


def test_a_canary_that_cannot_become_available_is_rolled_back_and_pruned(
    sessions: sessionmaker[Session], kubelet: LocalKubelet, controller: ClusterDeploymentController
) -> None:
    deployment_id = create(sessions)
    controller.reconcile_one(deployment_id)
    before = deployments(kubelet)
    start_canary(sessions, deployment_id, "models:/taxi-fare/4")
    kubelet.stuck.add("fare-canary-")
    controller.reconcile_one(deployment_id)  # applied: its status comes afterwards
    assert state(sessions, deployment_id).rollout is not None
    controller.reconcile_one(deployment_id)  # its pods cannot become available
    assert state(sessions, deployment_id).rollout is None
    with sessions() as session:
        reasons = [r.reason for r in deploys.revisions_of(session, deployment_id)]
    assert any("canary cannot become available" in reason for reason in reasons), reasons
    controller.reconcile_one(deployment_id)  # the next pass removes the canary's objects
    assert deployments(kubelet) == before
    assert routes(kubelet) == {"primary": 100}
    assert state(sessions, deployment_id).state == deploys.READY


def test_deleting_a_deployment_deletes_its_objects(
    sessions: sessionmaker[Session], kubelet: LocalKubelet, controller: ClusterDeploymentController
) -> None:
    deployment_id = create(sessions)
    controller.reconcile_one(deployment_id)
    assert kubelet.objects_by_key
    with transaction(sessions) as session:
        deployment = session.get(Deployment, deployment_id)
        assert deployment is not None
        deployment.state = deploys.DELETING
    controller.reconcile_one(deployment_id)
    assert not kubelet.objects_by_key
    with sessions() as session:
        assert session.get(Deployment, deployment_id) is None
