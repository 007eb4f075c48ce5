"""Deployments on Kubernetes: the controllers make the cluster's objects match each
deployment's current revision, as the local controller makes processes match it.

Every ``poll_seconds`` and for each deployment it
- renders the revision (``serving.render_deployment``) and applies every object with
  server-side apply; objects of the deployment that the revision no longer has (the
  previous model's Deployment once traffic has left it) are deleted;
- gives a variant its traffic share only once its Deployment is available, so a canary
  starts with 0% and takes its share when it can answer (the routes ConfigMap);
- judges a canary in progress from the router's statistics (the same judge and the same
  advance / promote / roll back as locally);
- sets the deployment's state from the Deployments' status: ready when every serving
  variant is available, failed on ``ProgressDeadlineExceeded`` (a canary that cannot
  become available is rolled back).

Replica counts are the HorizontalPodAutoscaler's, on the in-flight requests metric.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from sqlalchemy.orm import Session, sessionmaker

from modelyard.polling import Poller
from modelyard.runtimes.kubernetes.failures import Phase, WorkloadState, deployment_ready
from modelyard.runtimes.kubernetes.objects import LABEL_PREFIX, Manifest, label_value
from modelyard.runtimes.kubernetes.runtime import Cluster
from modelyard.runtimes.kubernetes.serving import SERVER_PORT, render_deployment, variant_name
from modelyard.runtimes.kubernetes.settings import ClusterSettings
from modelyard.serving import deployments as deploys
from modelyard.serving.router import router_stats
from modelyard.specs.deployments import DeploymentSpec, RolloutState
from modelyard.store.db import transaction
from modelyard.store.models import Deployment, Project

logger = logging.getLogger(__name__)

# What a deployment owns; deleted with it, or pruned when a revision drops them.
OWNED_KINDS = (
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
)


@dataclass
class _Seen:
    """What the controller remembers of a deployment between passes."""

    ready_since: dict[str, datetime] = field(default_factory=dict)  # variant -> first ready


class ClusterDeploymentController(Poller):
    """Reconciles deployments with Kubernetes objects.

    Args:
        sessions: The metadata store.
        settings: Where and how the pods run (the platform values' ``workloads``).
        cluster: The API server.
        poll_seconds: Time between passes.
        http: Reaches the routers' statistics (in the cluster, by their Service).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: ClusterSettings,
        cluster: Cluster,
        poll_seconds: float = 2.0,
        http: httpx.Client | None = None,
    ) -> None:
        super().__init__("k8s-deployments", poll_seconds)
        self.sessions = sessions
        self.settings = settings
        self.cluster = cluster
        self.http = http or httpx.Client(timeout=2.0)
        self._seen: dict[str, _Seen] = {}

    def stop(self) -> None:
        super().stop()
        self.http.close()

    def poll(self) -> None:
        """One pass over every deployment; one deployment's trouble never stops the rest."""
        deploys.reconcile_each(self.sessions, self.reconcile_one, self._seen)

    def router_url(self, spec: DeploymentSpec, project: str) -> str:
        return f"http://{spec.name}.{self.settings.namespace(project)}.svc:{SERVER_PORT}"

    def reconcile_one(self, deployment_id: str) -> None:
        with transaction(self.sessions) as session:
            deployment = session.get(Deployment, deployment_id)
            if deployment is None:
                return
            project = session.get(Project, deployment.project_id)
            project_name = project.name if project is not None else deployment.project_id
            namespace = self.settings.namespace(project_name)
            if deployment.state == deploys.DELETING:
                self._prune(namespace, deployment.name, keep=set())
                session.delete(deployment)
                self._seen.pop(deployment.id, None)
                logger.info("deployment %s deleted from the cluster", deployment.name)
                return
            seen = self._seen.setdefault(deployment.id, _Seen())
            revision = deploys.current_revision(session, deployment)
            spec = deploys.spec_of(revision)
            states = self._variant_states(spec, namespace, seen)
            ready = {name for name, state in states.items() if state.state is Phase.RUNNING}
            weights = deploys.available_weights(
                spec.routed.weights, ready=ready, starting=set(states) - ready
            )
            objects = render_deployment(
                spec, self.settings, project_name, deployment.revision, weights
            )
            for obj in objects:
                self.cluster.apply(obj)
            self._prune(namespace, spec.name, keep={_key(obj) for obj in objects})
            deployment.replicas = {
                name: int(state_replicas)
                for name, state_replicas in self._replicas(spec, namespace).items()
            }
            if deployment.rollout:
                self._judge(session, deployment, spec, project_name, states, seen)
            else:
                self._state(deployment, spec, states)

    def _variant_states(
        self, spec: DeploymentSpec, namespace: str, seen: _Seen
    ) -> dict[str, WorkloadState]:
        states = {}
        now = datetime.now(UTC)
        for variant in spec.variants:
            obj = self.cluster.get("apps/v1", "Deployment", namespace, variant_name(spec, variant))
            state = deployment_ready(obj) if obj is not None else WorkloadState(Phase.PENDING)
            states[variant.name] = state
            if state.state is Phase.RUNNING:
                seen.ready_since.setdefault(variant.name, now)
            else:
                seen.ready_since.pop(variant.name, None)
        return states

    def _replicas(self, spec: DeploymentSpec, namespace: str) -> dict[str, int]:
        counts = {}
        for variant in spec.variants:
            obj = self.cluster.get("apps/v1", "Deployment", namespace, variant_name(spec, variant))
            status = (obj or {}).get("status") or {}
            counts[variant.name] = int(status.get("replicas") or 0)
        return counts

    def _prune(self, namespace: str, deployment: str, keep: set[tuple[str, str, str]]) -> None:
        selector = f"{LABEL_PREFIX}deployment={label_value(deployment)}"
        for api_version, kind in OWNED_KINDS:
            for obj in self.cluster.objects(api_version, kind, namespace, selector):
                if (api_version, kind, obj["metadata"]["name"]) not in keep:
                    self.cluster.delete(api_version, kind, namespace, obj["metadata"]["name"])

    def _judge(
        self,
        session: Session,
        deployment: Deployment,
        spec: DeploymentSpec,
        project: str,
        states: dict[str, WorkloadState],
        seen: _Seen,
    ) -> None:
        state = RolloutState.model_validate(deployment.rollout)
        candidate = states.get(state.candidate)
        if candidate is not None and candidate.state is Phase.FAILED:
            reason = f"{state.candidate} cannot become available: {candidate.message}"
            deploys.roll_back(session, deployment, spec, reason, None)
            logger.warning("deployment %s: %s", deployment.name, reason)
            return
        if state.strategy != "canary" or state.paused:
            return
        ready_at = seen.ready_since.get(state.candidate)
        if ready_at is None:
            return  # the step's clock starts when the canary can answer
        started = max(state.step_started_at, ready_at)
        stats = router_stats(self.http, self.router_url(spec, project), started.timestamp())
        if stats is None:
            return
        deploys.judge_canary(session, deployment, spec, state, stats, started)

    def _state(
        self, deployment: Deployment, spec: DeploymentSpec, states: dict[str, WorkloadState]
    ) -> None:
        serving = [name for name, weight in spec.routed.weights.items() if weight > 0]
        failed = [name for name in serving if states[name].state is Phase.FAILED]
        if failed:
            state, reason = deploys.FAILED, f"{failed[0]}: {states[failed[0]].message}"
        elif all(states[name].state is Phase.RUNNING for name in serving):
            state, reason = deploys.READY, ""
        else:
            state, reason = deploys.PROGRESSING, "waiting for the variants' pods to be available"
        if (state, reason) != (deployment.state, deployment.reason):
            deployment.state, deployment.reason = state, reason


def _key(obj: Manifest) -> tuple[str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]
