"""A project's deployments: endpoints with variants, traffic, replicas and rollouts."""

from __future__ import annotations

from fastapi import APIRouter, Query, status

from modelyard.api.deps import API_PREFIX, Ctx
from modelyard.services.deployments import DeploymentService, live_stats
from modelyard.serving import deployments as deploys
from modelyard.specs.deployments import (
    DeploymentDetail,
    DeploymentOut,
    DeploymentSpec,
    DeploymentUpdate,
    RollbackRequest,
    TrafficChange,
)

router = APIRouter(prefix=API_PREFIX, tags=["deployments"])
BASE = "/projects/{project}/deployments"


@router.post(BASE, status_code=status.HTTP_201_CREATED)
def create_deployment(
    project: str,
    spec: DeploymentSpec,
    ctx: Ctx,
    port: int | None = Query(default=None, ge=1024, le=65535),
) -> DeploymentOut:
    """Record a deployment (revision 1); the controller starts its router and replicas."""
    deployment = DeploymentService(ctx).create(project, spec, port)
    return deploys.deployment_out(ctx.session, deployment)


@router.get(BASE)
def list_deployments(project: str, ctx: Ctx) -> list[DeploymentOut]:
    return [deploys.deployment_out(ctx.session, d) for d in DeploymentService(ctx).list(project)]


@router.get(BASE + "/{name}")
def get_deployment(
    project: str,
    name: str,
    ctx: Ctx,
    window: float = Query(default=60.0, gt=0, le=3600, description="Seconds of live stats."),
) -> DeploymentDetail:
    """The deployment, its revisions, replicas and what its router measured lately."""
    deployment = DeploymentService(ctx).get(project, name)
    return deploys.deployment_detail(ctx.session, deployment, live_stats(deployment, window))


@router.patch(BASE + "/{name}")
def update_deployment(project: str, name: str, change: DeploymentUpdate, ctx: Ctx) -> DeploymentOut:
    """Roll out a model (canary, blue-green or replace), set a shadow, change settings."""
    deployment = DeploymentService(ctx).update(project, name, change)
    return deploys.deployment_out(ctx.session, deployment)


@router.put(BASE + "/{name}/traffic")
def set_traffic(project: str, name: str, change: TrafficChange, ctx: Ctx) -> DeploymentOut:
    deployment = DeploymentService(ctx).traffic(project, name, change)
    return deploys.deployment_out(ctx.session, deployment)


@router.post(BASE + "/{name}/promote")
def promote_deployment(project: str, name: str, ctx: Ctx) -> DeploymentOut:
    deployment = DeploymentService(ctx).promote(project, name)
    return deploys.deployment_out(ctx.session, deployment)


@router.post(BASE + "/{name}/rollback")
def rollback_deployment(
    project: str, name: str, request: RollbackRequest, ctx: Ctx
) -> DeploymentOut:
    deployment = DeploymentService(ctx).rollback(project, name, request)
    return deploys.deployment_out(ctx.session, deployment)


@router.delete(BASE + "/{name}", status_code=status.HTTP_202_ACCEPTED)
def delete_deployment(project: str, name: str, ctx: Ctx) -> DeploymentOut:
    """Mark for deletion; the controller stops its processes and removes it."""
    deployment = DeploymentService(ctx).delete(project, name)
    return deploys.deployment_out(ctx.session, deployment)
