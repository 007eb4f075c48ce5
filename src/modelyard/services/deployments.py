"""A project's deployments: create, change (each change a revision), roll out, roll
back, delete. The deployment controller in ``modelyard up`` runs what they describe."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx
from sqlalchemy import select

from modelyard.auth.roles import Permission
from modelyard.errors import ConflictError, InvalidInputError, NotFoundError
from modelyard.services.context import ServiceContext
from modelyard.serving import deployments as deploys
from modelyard.serving import processes
from modelyard.serving.router import router_stats
from modelyard.specs.deployments import (
    DeploymentSpec,
    DeploymentUpdate,
    RollbackRequest,
    TrafficChange,
    Variant,
)
from modelyard.store.models import Deployment, Project, Replica
from modelyard.training.tracking import TrackingConfig


class DeploymentService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def create(self, project: str, spec: DeploymentSpec, port: int | None = None) -> Deployment:
        """Record a deployment at revision 1 (editor or above); models are pinned to
        versions now, so the revision names exactly what will serve."""
        record = self.ctx.project(project, Permission.RUN)
        if self._find(record, spec.name) is not None:
            raise ConflictError(
                f"deployment {spec.name!r} already exists in project {record.name!r}",
                code="deployment/exists",
            )
        if port is not None and self.ctx.session.scalar(
            select(Deployment.id).where(Deployment.port == port)
        ):
            raise ConflictError(
                f"port {port} is taken by another deployment", code="deployment/port_taken"
            )
        pinned = self._pinned(spec)
        deployment = Deployment(
            project_id=record.id,
            name=spec.name,
            revision=0,
            state=deploys.PROGRESSING,
            reason="starting",
            replicas={v.name: max(1, spec.scaling.min_replicas) for v in pinned.variants},
            port=port or processes.free_port(),
            created_by=self.ctx.principal.name,
        )
        self.ctx.session.add(deployment)
        self.ctx.flush(f"deployment {spec.name!r}")
        deploys.add_revision(
            self.ctx.session, deployment, pinned, "created", self.ctx.principal.name
        )
        self.ctx.flush(f"deployment {spec.name!r}")
        self.ctx.audit("deployment.create", "deployment", spec.name, project=record)
        return deployment

    def list(self, project: str) -> Sequence[Deployment]:
        record = self.ctx.project(project, Permission.READ)
        return list(
            self.ctx.session.scalars(
                select(Deployment)
                .where(Deployment.project_id == record.id)
                .order_by(Deployment.name)
            )
        )

    def get(self, project: str, name: str) -> Deployment:
        return self._load(self.ctx.project(project, Permission.READ), name)

    def update(self, project: str, name: str, change: DeploymentUpdate) -> Deployment:
        """A new revision: a rollout of a new model, a shadow, or new settings."""
        record = self.ctx.project(project, Permission.RUN)
        deployment = self._load(record, name)
        spec = self._spec(deployment)
        user = self.ctx.principal.name
        settings = change.model_dump(
            include={"scaling", "batching", "rollout", "log_payloads"}, exclude_none=True
        )
        before = deployment.revision
        if settings:  # they join the revision of the rollout or shadow given with them
            spec = DeploymentSpec.model_validate({**spec.model_dump(), **settings})
        if change.shadow is not None:
            spec = self._shadowed(deployment, spec, change)
        elif change.shadow_percent is not None and spec.routed.shadow:
            traffic = spec.routed.model_copy(update={"shadow_percent": change.shadow_percent})
            spec = spec.model_copy(update={"traffic": traffic})
            deploys.add_revision(
                self.ctx.session, deployment, spec, f"shadow at {change.shadow_percent}%", user
            )
        if change.model is not None:
            model = deploys.pinned_model(change.model, self._tracking_uri())
            if change.strategy == "replace":
                if deployment.rollout:
                    raise ConflictError(
                        f"deployment {name!r} is rolling out; promote or roll it back first",
                        code="deployment/rollout_in_progress",
                    )
                primary = spec.routed.primary
                variants = tuple(
                    Variant(name=primary, model=model) if v.name == primary else v
                    for v in spec.variants
                )
                deploys.add_revision(
                    self.ctx.session,
                    deployment,
                    deploys.revised(spec, variants=variants),
                    f"replace {primary} with {model}",
                    user,
                )
            else:
                deploys.start_rollout(
                    self.ctx.session, deployment, spec, model, change.strategy, user
                )
        if settings and deployment.revision == before:
            changed = ", ".join(sorted(settings))
            deploys.add_revision(self.ctx.session, deployment, spec, f"settings: {changed}", user)
        if deployment.revision == before:
            raise InvalidInputError(
                "nothing to change: give a model, a shadow or settings", code="deployment/no_change"
            )
        self.ctx.flush(f"deployment {name!r}")
        self.ctx.audit(
            "deployment.update",
            "deployment",
            name,
            project=record,
            details=change.model_dump(mode="json", exclude_none=True),
        )
        return deployment

    def traffic(self, project: str, name: str, change: TrafficChange) -> Deployment:
        """Weights by hand; an automatic rollout in progress pauses where it is."""
        record = self.ctx.project(project, Permission.RUN)
        deployment = self._load(record, name)
        spec = self._spec(deployment)
        try:
            revised = deploys.revised(spec, weights=change.weights)
        except ValueError as exc:
            raise InvalidInputError(
                f"invalid traffic: {exc}", code="deployment/invalid_traffic"
            ) from exc
        if set(change.weights) != {n for n in spec.routed.weights}:
            missing = sorted(set(spec.routed.weights) - set(change.weights))
            raise InvalidInputError(
                f"give a weight to every variant that has one (missing: {missing})",
                code="deployment/invalid_traffic",
            )
        split = ", ".join(f"{n} {w}%" for n, w in change.weights.items())
        deploys.add_revision(
            self.ctx.session, deployment, revised, f"traffic: {split}", self.ctx.principal.name
        )
        state = deploys.rollout_of(deployment)
        if state is not None:
            deployment.rollout = state.model_copy(update={"paused": True}).model_dump(mode="json")
        self.ctx.flush(f"deployment {name!r}")
        self.ctx.audit(
            "deployment.traffic", "deployment", name, project=record, details=change.weights
        )
        return deployment

    def promote(self, project: str, name: str) -> Deployment:
        """Finish the rollout now: the candidate takes all traffic."""
        record = self.ctx.project(project, Permission.RUN)
        deployment = self._load(record, name)
        state = deploys.rollout_of(deployment)
        if state is None:
            raise ConflictError(
                f"deployment {name!r} has no rollout to promote", code="deployment/no_rollout"
            )
        ready = self.ctx.session.scalar(
            select(Replica.id).where(
                Replica.deployment_id == deployment.id,
                Replica.variant == state.candidate,
                Replica.state == "ready",
            )
        )
        if ready is None:
            raise ConflictError(
                f"{state.candidate!r} has no ready replica yet; promote it once it can answer",
                code="deployment/candidate_not_ready",
            )
        deploys.promote(
            self.ctx.session,
            deployment,
            self._spec(deployment),
            f"{state.candidate} promoted by {self.ctx.principal.name}",
            self.ctx.principal.name,
        )
        self.ctx.flush(f"deployment {name!r}")
        self.ctx.audit("deployment.promote", "deployment", name, project=record)
        return deployment

    def rollback(self, project: str, name: str, request: RollbackRequest) -> Deployment:
        """Abort the rollout in progress, or return to an earlier revision's spec."""
        record = self.ctx.project(project, Permission.RUN)
        deployment = self._load(record, name)
        user = self.ctx.principal.name
        reason = request.reason or f"rolled back by {user}"
        spec = self._spec(deployment)
        if deployment.rollout and request.revision is None:
            deploys.roll_back(self.ctx.session, deployment, spec, reason, user)
        else:
            target = request.revision or deployment.revision - 1
            found = next(
                (
                    r
                    for r in deploys.revisions_of(self.ctx.session, deployment.id)
                    if r.number == target
                ),
                None,
            )
            if found is None or target == deployment.revision:
                raise NotFoundError(
                    f"deployment {name!r} has no earlier revision {target} (kept: the "
                    f"last {deploys.KEPT_REVISIONS})",
                    code="deployment/revision_not_found",
                )
            deployment.rollout = None
            deploys.add_revision(
                self.ctx.session,
                deployment,
                deploys.spec_of(found),
                f"rollback to revision {target}: {reason}",
                user,
                previous_status=deploys.ROLLED_BACK,
                previous_reason=reason,
            )
            replicas = {
                v.name: deployment.replicas.get(v.name, 1) for v in deploys.spec_of(found).variants
            }
            deployment.replicas = replicas
            deployment.state = deploys.PROGRESSING
        self.ctx.flush(f"deployment {name!r}")
        self.ctx.audit(
            "deployment.rollback", "deployment", name, project=record, details={"reason": reason}
        )
        return deployment

    def delete(self, project: str, name: str) -> Deployment:
        """Mark for deletion; the controller stops the processes, then removes it."""
        record = self.ctx.project(project, Permission.RUN)
        deployment = self._load(record, name)
        deployment.state = deploys.DELETING
        deployment.reason = f"deleted by {self.ctx.principal.name}"
        self.ctx.flush(f"deployment {name!r}")
        self.ctx.audit("deployment.delete", "deployment", name, project=record)
        return deployment

    # -- helpers -----------------------------------------------------------------------

    def _shadowed(
        self, deployment: Deployment, spec: DeploymentSpec, change: DeploymentUpdate
    ) -> DeploymentSpec:
        user = self.ctx.principal.name
        others = tuple(v for v in spec.variants if v.name != deploys.SHADOW)
        if change.shadow == "":
            if spec.routed.shadow is None:
                raise ConflictError(
                    f"deployment {deployment.name!r} has no shadow", code="deployment/no_shadow"
                )
            revised = deploys.revised(spec, variants=others, shadow=None)
            deploys.add_revision(self.ctx.session, deployment, revised, "shadow removed", user)
            replicas = dict(deployment.replicas)
            replicas.pop(deploys.SHADOW, None)
            deployment.replicas = replicas
            return revised
        assert change.shadow is not None
        model = deploys.pinned_model(change.shadow, self._tracking_uri())
        percent = change.shadow_percent or spec.routed.shadow_percent
        revised = deploys.revised(
            spec,
            variants=(*others, Variant(name=deploys.SHADOW, model=model)),
            shadow=deploys.SHADOW,
        )
        revised = revised.model_copy(
            update={"traffic": revised.routed.model_copy(update={"shadow_percent": percent})}
        )
        deploys.add_revision(
            self.ctx.session, deployment, revised, f"shadow {model} at {percent}%", user
        )
        deployment.replicas = {
            **deployment.replicas,
            deploys.SHADOW: max(1, spec.scaling.min_replicas),
        }
        return revised

    def _pinned(self, spec: DeploymentSpec) -> DeploymentSpec:
        tracking_uri = self._tracking_uri()
        variants = tuple(
            v.model_copy(update={"model": deploys.pinned_model(v.model, tracking_uri)})
            for v in spec.variants
        )
        return spec.model_copy(update={"variants": variants})

    def _tracking_uri(self) -> str:
        return TrackingConfig.from_settings(self.ctx.settings).tracking_uri

    def _spec(self, deployment: Deployment) -> DeploymentSpec:
        return deploys.spec_of(deploys.current_revision(self.ctx.session, deployment))

    def _find(self, project: Project, name: str) -> Deployment | None:
        return self.ctx.session.scalar(
            select(Deployment).where(Deployment.project_id == project.id, Deployment.name == name)
        )

    def _load(self, project: Project, name: str) -> Deployment:
        deployment = self._find(project, name)
        if deployment is None:
            raise NotFoundError(
                f"deployment {name!r} does not exist in project {project.name!r}",
                code="deployment/not_found",
                details={"project": project.name, "deployment": name},
            )
        return deployment


def live_stats(deployment: Deployment, window_seconds: float = 60.0) -> dict[str, Any]:
    """What the deployment's router measured over the last ``window_seconds`` (empty
    when the router does not answer)."""
    with httpx.Client(timeout=1.0) as client:
        return (
            router_stats(client, deploys.endpoint_of(deployment), time.time() - window_seconds)
            or {}
        )
