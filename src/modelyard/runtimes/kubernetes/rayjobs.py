"""Ray work on Kubernetes through KubeRay: a ``RayJob`` that starts an ephemeral Ray
cluster, runs one driver command on it and deletes the cluster a while after the job
ends, or, when ``settings.ray_cluster`` names a long-lived RayCluster, a RayJob that
submits the driver to that cluster (``clusterSelector``).

The driver is a modelyard command (``modelyard run ... --runtime ray``,
``modelyard tune ... --runtime ray``); inside a Ray cluster ``ray.init()`` finds the
cluster through ``RAY_ADDRESS``, which KubeRay sets, so the same command runs on a
laptop's local Ray and on the cluster.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

import yaml

from modelyard.runtimes.kubernetes.objects import Manifest, labels, metadata, name
from modelyard.runtimes.kubernetes.pods import ContainerSpec, container, pod_spec
from modelyard.runtimes.kubernetes.settings import ClusterSettings
from modelyard.specs.pipelines import PipelineSpec
from modelyard.specs.resources import Resources

HEAD_PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001}
DEFAULT_HEAD = Resources(cpu=1, memory=2 * 2**30)


def rayjob(
    settings: ClusterSettings,
    *,
    project: str,
    job_name: str,
    entrypoint: Sequence[str],
    workers: int = 1,
    worker_resources: Resources | None = None,
    head_resources: Resources | None = None,
    env: dict[str, str] | None = None,
    secrets: Sequence[str] = (),
    timeout_seconds: int | None = None,
    run: str | None = None,
) -> Manifest:
    """A RayJob running ``entrypoint`` with ``workers`` worker pods of
    ``worker_resources`` each (ephemeral cluster) or on ``settings.ray_cluster``; the
    RayJob and its pods are labelled with the ``run`` they drive, if given."""
    object_labels = labels("ray", project=project, job=job_name, run=run)
    driver_env = {"MODELYARD_RAY_ADDRESS": "auto", **(env or {})}
    spec: Manifest = {
        "entrypoint": shlex.join(entrypoint),
        "runtimeEnvYAML": yaml.safe_dump({"env_vars": driver_env}, sort_keys=True),
        "submissionMode": "K8sJobMode",
    }
    if timeout_seconds:
        spec["activeDeadlineSeconds"] = timeout_seconds
    if settings.ray_cluster:
        spec["clusterSelector"] = {"ray.io/cluster": settings.ray_cluster}
    else:
        spec |= {
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": settings.ray_ttl_seconds,
            "rayClusterSpec": _cluster(
                settings,
                object_labels,
                workers=workers,
                worker_resources=worker_resources or Resources(),
                head_resources=head_resources or DEFAULT_HEAD,
                env=driver_env,
                secrets=secrets,
            ),
        }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": metadata(
            name("ray", job_name, limit=40), settings.namespace(project), object_labels
        ),
        "spec": spec,
    }


def pipeline_rayjob(
    settings: ClusterSettings,
    *,
    project: str,
    job_name: str,
    spec: PipelineSpec,
    entrypoint: Sequence[str],
    run: str | None = None,
) -> Manifest:
    """The RayJob that drives a run of ``spec`` (``run``, once it exists): one Ray
    worker per task of the pipeline, which Ray's scheduler shares between the tasks
    that are ready."""
    return rayjob(
        settings,
        project=project,
        job_name=job_name,
        entrypoint=entrypoint,
        workers=max(1, len(spec.nodes)),
        run=run,
    )


def _cluster(
    settings: ClusterSettings,
    object_labels: dict[str, str],
    *,
    workers: int,
    worker_resources: Resources,
    head_resources: Resources,
    env: dict[str, str],
    secrets: Sequence[str],
) -> Manifest:
    def template(role: str, resources: Resources, ports: dict[str, int]) -> Manifest:
        ray_container = container(
            settings,
            ContainerSpec(
                name=f"ray-{role}",
                args=[],  # KubeRay supplies `ray start ...`
                env=env,
                secrets=secrets,
                resources=resources,
                ports=ports,
            ),
        )
        ray_container.pop("command")
        if role == "head":  # the driver runs there and records its run in the store
            ray_container["envFrom"] = [{"secretRef": {"name": settings.driver_secret}}]
        return {
            "metadata": {"labels": object_labels},
            "spec": pod_spec(
                settings,
                [ray_container],
                priority_class=settings.priority_classes.training,
                restart_policy="Never" if role == "worker" else "Always",
                gpus=resources.gpu,
            ),
        }

    return {
        "rayVersion": settings.ray_version,
        "headGroupSpec": {
            "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},  # noqa: S104
            "template": template("head", head_resources, HEAD_PORTS),
        },
        "workerGroupSpecs": [
            {
                "groupName": "workers",
                "replicas": workers,
                "minReplicas": workers,
                "maxReplicas": workers,
                "rayStartParams": {},
                "template": template("worker", worker_resources, {}),
            }
        ],
    }
