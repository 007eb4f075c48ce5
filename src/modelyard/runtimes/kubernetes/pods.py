"""Pod templates every workload shares: the image, the artifact store and tracking
wiring, secrets by reference, GPU placement, priority, and a restricted security
context."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelyard.runtimes.kubernetes.objects import (
    Manifest,
    env_list,
    resource_requirements,
    secret_env,
)
from modelyard.runtimes.kubernetes.settings import ClusterSettings
from modelyard.specs.resources import Resources

ARTIFACTS_VOLUME = "artifacts"
# Non-root (the image's user), no privilege escalation, no capabilities, the runtime's
# seccomp profile: the "restricted" Pod Security Standard. The platform's own pods add a
# read-only root filesystem; workloads keep theirs writable for libraries that cache.
CONTAINER_SECURITY: Manifest = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}
POD_SECURITY: Manifest = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True)
class ContainerSpec:
    """One container of a workload.

    Args:
        name: The container's name.
        args: Its command line, in full (``["modelyard", ...]``).
        env: Plain variables.
        secrets: Keys of the project's Secret given as variables of the same name.
        resources: Requests and limits.
        ports: Named container ports.
        extra: More container fields (probes, lifecycle), merged last.
    """

    name: str
    args: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: Sequence[str] = ()
    resources: Resources = field(default_factory=Resources)
    ports: Mapping[str, int] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)


def workload_env(settings: ClusterSettings) -> dict[str, str]:
    """Where every workload finds the artifact store and the tracking server."""
    env = {"MODELYARD_ARTIFACTS_URL": settings.artifacts.url, "PYTHONUNBUFFERED": "1"}
    if settings.artifacts.s3_endpoint:
        env["AWS_ENDPOINT_URL"] = settings.artifacts.s3_endpoint
    if settings.tracking_uri:
        env["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    return env


def container(settings: ClusterSettings, spec: ContainerSpec, image: str | None = None) -> Manifest:
    env = env_list({**workload_env(settings), **spec.env})
    if settings.artifacts.credentials_secret and not settings.artifacts.pvc:
        env += secret_env(
            settings.artifacts.credentials_secret, ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        )
    env += secret_env(settings.project_secret, spec.secrets)
    result: Manifest = {
        "name": spec.name,
        "image": image or settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(spec.args),
        "env": env,
    }
    requirements = resource_requirements(spec.resources)
    if requirements:
        result["resources"] = requirements
    if spec.ports:
        result["ports"] = [
            {"name": port_name, "containerPort": number, "protocol": "TCP"}
            for port_name, number in spec.ports.items()
        ]
    if settings.artifacts.pvc:
        result["volumeMounts"] = [
            {"name": ARTIFACTS_VOLUME, "mountPath": settings.artifacts.mount_path}
        ]
    result["securityContext"] = dict(CONTAINER_SECURITY)
    result.update(spec.extra)
    return result


def pod_spec(
    settings: ClusterSettings,
    containers: Sequence[Manifest],
    *,
    priority_class: str,
    restart_policy: str,
    gpus: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> Manifest:
    """A pod spec: GPU pods get the GPU nodes' selector and toleration."""
    spec: Manifest = {
        "serviceAccountName": settings.service_account,
        "priorityClassName": priority_class,
        "restartPolicy": restart_policy,
        "securityContext": dict(POD_SECURITY),
        "containers": list(containers),
    }
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": secret} for secret in settings.image_pull_secrets]
    if gpus:
        spec["nodeSelector"] = dict(settings.gpu.node_selector)
        spec["tolerations"] = [dict(toleration) for toleration in settings.gpu.tolerations]
    if settings.artifacts.pvc:
        spec["volumes"] = [
            {
                "name": ARTIFACTS_VOLUME,
                "persistentVolumeClaim": {"claimName": settings.artifacts.pvc},
            }
        ]
    if extra:
        spec.update(extra)
    return spec
