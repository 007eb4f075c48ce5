"""A deployment as Kubernetes objects.

Each variant's model, at the deployment's revision, is a Deployment of model-server pods
with its own Service, HorizontalPodAutoscaler (``autoscaling/v2`` on the in-flight
requests the Prometheus Adapter serves, the same rule as the local autoscaler) and
PodDisruptionBudget. Its name carries the hash of what its pods depend on (model
version, batching, resources), so a new version is a new Deployment that starts beside
the old one, as the local controller starts new replicas before retiring old ones.

The router runs as its own Deployment behind the endpoint's Service and reads its
routes (weights, shadow, header rules) from a ConfigMap, the file the local controller
writes; each variant's address is its Service, which spreads requests over its pods.
Probes use the model server's health endpoints; ``preStop`` waits for the endpoints to
drop the pod before the server drains on SIGTERM.
"""

from __future__ import annotations

import json
from typing import Any

from modelyard.runtimes.kubernetes.objects import Manifest, labels, metadata, name
from modelyard.runtimes.kubernetes.pods import ContainerSpec, container, pod_spec
from modelyard.runtimes.kubernetes.settings import ClusterSettings
from modelyard.serving.autoscaler import hpa_spec
from modelyard.specs.deployments import DeploymentSpec, Variant
from modelyard.specs.resources import Resources

SERVER_PORT = 8080
ROUTER_REPLICAS = 2
ROUTES_MOUNT = "/etc/modelyard/routes"
DRAIN_SECONDS = 20  # the model server's default graceful shutdown
ENDPOINTS_SETTLE_SECONDS = 5
ROUTER_RESOURCES = Resources(cpu=0.5, memory=256 * 2**20)


def render_deployment(
    spec: DeploymentSpec,
    settings: ClusterSettings,
    project: str,
    revision: int = 1,
    weights: dict[str, int] | None = None,
) -> list[Manifest]:
    """Every object of the deployment at ``revision``; ``weights`` replace the spec's
    in the routes (the controller moves a starting canary's share elsewhere)."""
    objects: list[Manifest] = []
    services: dict[str, str] = {}
    for variant in spec.variants:
        variant_objects = variant_workload(spec, variant, settings, project, revision)
        services[variant.name] = _service_url(variant_objects[1], settings.namespace(project))
        objects += variant_objects
    objects += router_workload(spec, settings, project, revision, services, weights)
    return objects


def variant_name(spec: DeploymentSpec, variant: Variant) -> str:
    return name(spec.name, variant.name, spec.config_key(variant.model)[:8])


def variant_workload(
    spec: DeploymentSpec, variant: Variant, settings: ClusterSettings, project: str, revision: int
) -> list[Manifest]:
    """The variant's Deployment, Service, PodDisruptionBudget and (when it may scale)
    HorizontalPodAutoscaler."""
    namespace = settings.namespace(project)
    object_name = variant_name(spec, variant)
    selector = labels(
        "model-server", project=project, deployment=spec.name, variant=variant.name
    ) | {"modelyard.io/config": spec.config_key(variant.model)[:8]}
    object_labels = selector | {"modelyard.io/revision": str(revision)}
    server = container(
        settings,
        ContainerSpec(
            name="model-server",
            args=["modelyard", *spec.server_args(variant.model, "0.0.0.0", SERVER_PORT)],  # noqa: S104
            env={"MODELYARD_MODEL_NAME": spec.name, "MODELYARD_DEPLOYMENT": spec.name},
            resources=spec.resources,
            ports={"http": SERVER_PORT},
            extra=_probes("/v2/health/ready", "/v2/health/live", startup_minutes=10),
        ),
    )
    scaled = spec.scaling.max_replicas > max(1, spec.scaling.min_replicas)
    deployment_spec: Manifest = {
        "selector": {"matchLabels": selector},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "template": {
            "metadata": {"labels": object_labels, "annotations": _scrape(SERVER_PORT)},
            "spec": pod_spec(
                settings,
                [server],
                priority_class=settings.priority_classes.serving,
                restart_policy="Always",
                gpus=spec.resources.gpu,
                extra={
                    "terminationGracePeriodSeconds": DRAIN_SECONDS + ENDPOINTS_SETTLE_SECONDS + 5,
                    "topologySpreadConstraints": _spread(settings, selector),
                },
            ),
        },
    }
    if not scaled:  # with an HPA, the HPA owns the replica count
        deployment_spec = {"replicas": max(1, spec.scaling.min_replicas), **deployment_spec}
    objects: list[Manifest] = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata(object_name, namespace, object_labels),
            "spec": deployment_spec,
        },
        _service(object_name, namespace, object_labels, selector),
        _disruption_budget(object_name, namespace, object_labels, selector),
    ]
    if scaled:
        objects.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": metadata(object_name, namespace, object_labels),
                "spec": hpa_spec(spec.scaling, object_name),
            }
        )
    return objects


def routes(
    spec: DeploymentSpec,
    services: dict[str, str],
    revision: int,
    weights: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The router's routes file: the same table the local controller writes, with each
    variant's Service as its one replica address."""
    traffic = spec.routed
    return {
        "deployment": spec.name,
        "generation": revision,
        "weights": dict(traffic.weights if weights is None else weights),
        "variants": {
            variant.name: {
                "model": variant.model,
                "version": variant.model.rpartition("/")[2],
                "replicas": [services[variant.name]],
            }
            for variant in spec.variants
        },
        "shadow": traffic.shadow,
        "shadow_percent": traffic.shadow_percent,
        "matches": [match.model_dump() for match in traffic.matches],
        "sticky_header": traffic.sticky_header,
    }


def router_workload(
    spec: DeploymentSpec,
    settings: ClusterSettings,
    project: str,
    revision: int,
    services: dict[str, str],
    weights: dict[str, int] | None = None,
) -> list[Manifest]:
    """The routes ConfigMap, the router's Deployment, the endpoint's Service and the
    router's PodDisruptionBudget."""
    namespace = settings.namespace(project)
    object_name = name(spec.name)
    selector = labels("router", project=project, deployment=spec.name)
    object_labels = selector | {"modelyard.io/revision": str(revision)}
    routes_text = json.dumps(routes(spec, services, revision, weights), indent=2, sort_keys=True)
    router = container(
        settings,
        ContainerSpec(
            name="router",
            args=[
                "modelyard",
                "router",
                "--routes",
                f"{ROUTES_MOUNT}/routes.json",
                "--host",
                "0.0.0.0",  # noqa: S104
                "--port",
                str(SERVER_PORT),
            ],
            env={"MODELYARD_DEPLOYMENT": spec.name},
            resources=ROUTER_RESOURCES,
            ports={"http": SERVER_PORT},
            extra=_probes("/router/stats", "/router/stats", startup_minutes=1),
        ),
    )
    router["volumeMounts"] = [
        *router.get("volumeMounts", []),
        {"name": "routes", "mountPath": ROUTES_MOUNT, "readOnly": True},
    ]
    pod = pod_spec(
        settings,
        [router],
        priority_class=settings.priority_classes.serving,
        restart_policy="Always",
        extra={
            "terminationGracePeriodSeconds": ENDPOINTS_SETTLE_SECONDS + 10,
            "topologySpreadConstraints": _spread(settings, selector),
        },
    )
    pod["volumes"] = [
        *pod.get("volumes", []),
        {"name": "routes", "configMap": {"name": f"{object_name}-routes"}},
    ]
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(f"{object_name}-routes", namespace, object_labels),
            "data": {"routes.json": routes_text},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata(f"{object_name}-router", namespace, object_labels),
            "spec": {
                "replicas": ROUTER_REPLICAS,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": object_labels, "annotations": _scrape(SERVER_PORT)},
                    "spec": pod,
                },
            },
        },
        _service(object_name, namespace, object_labels, selector),
        _disruption_budget(f"{object_name}-router", namespace, object_labels, selector),
    ]


def _service_url(service: Manifest, namespace: str) -> str:
    return f"http://{service['metadata']['name']}.{namespace}.svc:{SERVER_PORT}"


def _service(
    object_name: str, namespace: str, object_labels: dict[str, str], selector: dict[str, str]
) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(object_name, namespace, object_labels),
        "spec": {
            "selector": selector,
            "ports": [
                {"name": "http", "port": SERVER_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def _disruption_budget(
    object_name: str, namespace: str, object_labels: dict[str, str], selector: dict[str, str]
) -> Manifest:
    """One pod at a time may be evicted by a drain; an unready pod may always go."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(object_name, namespace, object_labels),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def _probes(ready: str, live: str, startup_minutes: int) -> dict[str, Any]:
    def probe(path: str, **timing: int) -> Manifest:
        return {"httpGet": {"path": path, "port": "http"}, **timing}

    return {
        # Loading a large model may take minutes: liveness waits until it has started.
        "startupProbe": probe(live, periodSeconds=5, failureThreshold=startup_minutes * 12),
        "readinessProbe": probe(ready, periodSeconds=5, failureThreshold=2),
        "livenessProbe": probe(live, periodSeconds=10, failureThreshold=3, timeoutSeconds=5),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(ENDPOINTS_SETTLE_SECONDS)]}}},
    }


def _spread(settings: ClusterSettings, selector: dict[str, str]) -> list[Manifest]:
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector},
        }
        for key in settings.topology_keys
    ]


def _scrape(port: int) -> dict[str, str]:
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port)}
