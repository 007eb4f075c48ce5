"""The platform itself on Kubernetes: API, controllers, migrations, RBAC, ingress,
monitoring, network policies, priority classes and the project namespaces.

``render_platform(values)`` is what ``modelyard render platform`` prints; the Helm chart
in ``deploy/helm/modelyard`` renders the same objects from the same values (its
``values.yaml`` and ``values.schema.json`` are generated from :class:`PlatformValues`).
"""

from __future__ import annotations

import json

from modelyard.runtimes.kubernetes import observability
from modelyard.runtimes.kubernetes.namespaces import (
    API,
    CONTROLLERS,
    account_name,
    project_namespace,
)
from modelyard.runtimes.kubernetes.objects import Manifest, labels, metadata, name
from modelyard.runtimes.kubernetes.platform_values import (
    ContainerResources,
    PlatformValues,
    SecretKeyRef,
    load_values,
)
from modelyard.runtimes.kubernetes.pods import CONTAINER_SECURITY, POD_SECURITY
from modelyard.runtimes.kubernetes.queues import cluster_queue_objects
from modelyard.runtimes.kubernetes.rbac import cluster_rbac, service_accounts

__all__ = ["PlatformValues", "load_values", "render_platform"]

API_PORT = 8420
METRICS_PORT = 9420
HOME = "/var/lib/modelyard"
MIGRATIONS = "migrations"
# Pods the PodMonitor scrapes on a port named ``http`` (model servers, routers) or
# ``metrics`` (the controllers, task pods that serve metrics).
SCRAPED_COMPONENTS = ("controllers", "model-server", "router", "task")
SCRAPED_PORTS = ("http", "metrics")
PRIORITIES = {"serving": 1_000_000, "training": 100_000, "batch": 10_000}


def render_platform(values: PlatformValues) -> list[Manifest]:
    """Every object of the platform, in an order ``kubectl apply`` accepts."""
    objects: list[Manifest] = []
    # A project sharing the platform's namespace brings that Namespace (with its labels).
    shared = values.workloads.single_namespace is not None
    if values.create_namespace and not (
        shared and values.projects and values.workloads.single_namespace == values.namespace
    ):
        platform_labels = labels("platform") | {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/warn": "restricted",
        }
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": metadata(values.namespace, None, platform_labels),
            }
        )
    objects += priority_classes(values)
    objects += cluster_queue_objects(values.workloads)
    objects += service_accounts(values)
    objects += cluster_rbac(values)
    # With one namespace for every project, the first project's quota is that namespace's.
    for project in values.projects[:1] if shared else values.projects:
        objects += project_namespace(values.workloads, project, platform_namespace=values.namespace)
    objects.append(migrations_job(values))
    objects += api_objects(values)
    objects.append(workloads_config(values))
    objects.append(controllers_deployment(values))
    if values.ingress.enabled:
        objects.append(ingress(values))
    objects += monitoring_objects(values)
    if values.network_policies.enabled:
        objects += network_policies(values)
    return objects


def priority_classes(values: PlatformValues) -> list[Manifest]:
    names = values.workloads.priority_classes
    return [
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": metadata(getattr(names, kind), None, labels("platform")),
            "value": value,
            "globalDefault": False,
            "description": f"modelyard {kind} pods",
        }
        for kind, value in PRIORITIES.items()
    ]


def platform_env(values: PlatformValues) -> list[Manifest]:
    """The environment shared by the API, controllers and migrations: settings as
    values, secrets only as references to Secrets."""
    env: dict[str, str] = {
        "MODELYARD_HOME": HOME,
        "MODELYARD_LOG_JSON": "true",
        "MODELYARD_LOG_LEVEL": values.log_level,
    }
    artifacts = values.workloads.artifacts
    env["MODELYARD_ARTIFACTS_URL"] = artifacts.url
    if artifacts.s3_endpoint and not artifacts.pvc:
        env["AWS_ENDPOINT_URL"] = artifacts.s3_endpoint
    if values.ingress.enabled:
        # Client addresses (audit log, rate limits) arrive in X-Forwarded-For.
        env["MODELYARD_TRUST_FORWARDED_FOR"] = "true"
    if values.workloads.tracking_uri:
        env["MLFLOW_TRACKING_URI"] = values.workloads.tracking_uri
    oidc = values.oidc
    if oidc.issuer:
        env["MODELYARD_OIDC_ISSUER"] = oidc.issuer
        env["MODELYARD_OIDC_USERNAME_CLAIM"] = oidc.username_claim
        env["MODELYARD_OIDC_GROUPS_CLAIM"] = oidc.groups_claim
        if oidc.audience:
            env["MODELYARD_OIDC_AUDIENCE"] = oidc.audience
        if oidc.jwks_url:
            env["MODELYARD_OIDC_JWKS_URL"] = oidc.jwks_url
        if oidc.group_pattern:
            env["MODELYARD_OIDC_GROUP_PATTERN"] = oidc.group_pattern
        if oidc.role_mappings:
            env["MODELYARD_OIDC_ROLE_MAPPINGS"] = json.dumps(
                [m.model_dump(exclude_none=True) for m in oidc.role_mappings],
                sort_keys=True,
                separators=(",", ":"),
            )
    result: list[Manifest] = [{"name": key, "value": env[key]} for key in sorted(env)]
    secrets = [
        ("MODELYARD_DATABASE_URL", values.database),
        ("MODELYARD_SECRET_KEY", values.secret_key),
    ]
    if artifacts.credentials_secret and not artifacts.pvc:
        secrets += [
            (key, SecretKeyRef(existing_secret=artifacts.credentials_secret, key=key))
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        ]
    result += [
        {
            "name": variable,
            "valueFrom": {"secretKeyRef": {"name": ref.existing_secret, "key": ref.key}},
        }
        for variable, ref in sorted(secrets, key=lambda item: item[0])
    ]
    return result


_CONTAINER_SECURITY: Manifest = CONTAINER_SECURITY | {"readOnlyRootFilesystem": True}


def _pod_spec(
    values: PlatformValues,
    component: str,
    command: list[str],
    resources: ContainerResources,
    *,
    account: str | None,
    ports: list[Manifest] | None = None,
    probes: Manifest | None = None,
) -> Manifest:
    container: Manifest = {
        "name": component,
        "image": values.image,
        "imagePullPolicy": values.image_pull_policy,
        "command": command,
        "env": platform_env(values),
    }
    if ports:
        container["ports"] = ports
    container.update(probes or {})
    container["resources"] = resources.model_dump(exclude_defaults=False)
    container["securityContext"] = dict(_CONTAINER_SECURITY)
    mounts = [{"name": "home", "mountPath": HOME}, {"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108
    volumes: list[Manifest] = [
        {"name": "home", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    artifacts = values.workloads.artifacts
    if artifacts.pvc:
        mounts.append({"name": "artifacts", "mountPath": artifacts.mount_path})
        volumes.append({"name": "artifacts", "persistentVolumeClaim": {"claimName": artifacts.pvc}})
    container["volumeMounts"] = mounts
    spec: Manifest = {}
    if account is None:
        spec["automountServiceAccountToken"] = False
    else:
        spec["serviceAccountName"] = account
    spec["securityContext"] = dict(POD_SECURITY)
    spec["containers"] = [container]
    spec["volumes"] = volumes
    if values.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in values.image_pull_secrets]
    return spec


def migrations_job(values: PlatformValues) -> Manifest:
    """``modelyard db upgrade`` once per install and upgrade: after install (the API
    is not ready until the schema is current) and before an upgrade's new pods."""
    pod = _pod_spec(
        values,
        MIGRATIONS,
        ["modelyard", "db", "upgrade"],
        values.controllers.resources,
        account=None,
    )
    pod["restartPolicy"] = "Never"
    job_labels = labels(MIGRATIONS)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(
            name("modelyard", MIGRATIONS),
            values.namespace,
            job_labels,
            {
                "helm.sh/hook": "post-install,pre-upgrade",
                "helm.sh/hook-weight": "0",
                "helm.sh/hook-delete-policy": "before-hook-creation",
            },
        ),
        "spec": {
            "backoffLimit": 3,
            "ttlSecondsAfterFinished": 600,
            "template": {"metadata": {"labels": job_labels}, "spec": pod},
        },
    }


def _selector(component: str) -> dict[str, str]:
    return labels(component)


def api_objects(values: PlatformValues) -> list[Manifest]:
    """The API's Deployment, Service and PodDisruptionBudget."""
    api_labels = labels(API)
    api_name = name("modelyard", API)
    http = {"httpGet": {"path": "/healthz", "port": "http"}}
    probes: Manifest = {
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "livenessProbe": {**http, "periodSeconds": 20, "failureThreshold": 3},
    }
    pod = _pod_spec(
        values,
        API,
        ["modelyard", "server", "--host", "0.0.0.0", "--port", str(API_PORT)],  # noqa: S104
        values.api.resources,
        account=account_name(API),
        ports=[{"name": "http", "containerPort": API_PORT, "protocol": "TCP"}],
        probes=probes,
    )
    pod["terminationGracePeriodSeconds"] = 30
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata(api_name, values.namespace, api_labels),
            "spec": {
                "replicas": values.api.replicas,
                "selector": {"matchLabels": _selector(API)},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
                },
                "template": {"metadata": {"labels": api_labels}, "spec": pod},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(api_name, values.namespace, api_labels),
            "spec": {
                "type": "ClusterIP",
                "selector": _selector(API),
                "ports": [
                    {"name": "http", "port": API_PORT, "targetPort": "http", "protocol": "TCP"}
                ],
            },
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": metadata(api_name, values.namespace, api_labels),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(API)}},
        },
    ]


WORKLOADS_CONFIG = "modelyard-workloads"
WORKLOADS_FILE = "/etc/modelyard/workloads/values.json"


def workloads_config(values: PlatformValues) -> Manifest:
    """The values' ``workloads`` section for the controllers (Helm writes the same
    settings with its ``toJson``, in its own spelling of numbers and quantities)."""
    workloads = values.workloads.model_dump(mode="json", exclude_none=True)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(WORKLOADS_CONFIG, values.namespace, labels(CONTROLLERS)),
        "data": {"values.json": json.dumps({"workloads": workloads}, sort_keys=True)},
    }


def controllers_deployment(values: PlatformValues) -> Manifest:
    """One controllers pod at a time (``Recreate``): two would both schedule runs."""
    controller_labels = labels(CONTROLLERS)
    pod = _pod_spec(
        values,
        CONTROLLERS,
        ["modelyard", "controllers", "--metrics-port", str(METRICS_PORT)],
        values.controllers.resources,
        account=account_name(CONTROLLERS),
        ports=[{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        probes={
            "livenessProbe": {
                "httpGet": {"path": "/metrics", "port": "metrics"},
                "periodSeconds": 20,
                "failureThreshold": 3,
            }
        },
    )
    pod["terminationGracePeriodSeconds"] = 60
    # The controllers place runs with runtime "kubernetes" as the values' workloads say.
    (container,) = pod["containers"]
    container["env"] += [
        {"name": "MODELYARD_KUBERNETES_VALUES", "value": WORKLOADS_FILE},
        {
            "name": "MODELYARD_PLATFORM_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
    ]
    container["volumeMounts"].append(
        {"name": "workloads", "mountPath": WORKLOADS_FILE.rpartition("/")[0], "readOnly": True}
    )
    pod["volumes"].append({"name": "workloads", "configMap": {"name": WORKLOADS_CONFIG}})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(name("modelyard", CONTROLLERS), values.namespace, controller_labels),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": _selector(CONTROLLERS)},
            "strategy": {"type": "Recreate"},
            "template": {"metadata": {"labels": controller_labels}, "spec": pod},
        },
    }


def ingress(values: PlatformValues) -> Manifest:
    settings = values.ingress
    spec: Manifest = {}
    if settings.class_name:
        spec["ingressClassName"] = settings.class_name
    if settings.tls_secret:
        spec["tls"] = [{"hosts": [settings.host], "secretName": settings.tls_secret}]
    spec["rules"] = [
        {
            "host": settings.host,
            "http": {
                "paths": [
                    {
                        "path": "/",
                        "pathType": "Prefix",
                        "backend": {
                            "service": {
                                "name": name("modelyard", API),
                                "port": {"name": "http"},
                            }
                        },
                    }
                ]
            },
        }
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata(
            name("modelyard", API), values.namespace, labels(API), settings.annotations
        ),
        "spec": spec,
    }


def monitoring_objects(values: PlatformValues) -> list[Manifest]:
    """ServiceMonitor (API), PodMonitor (model servers, routers, tasks, controllers),
    PrometheusRule, Grafana dashboard and the Prometheus Adapter rule.

    The adapter's ConfigMap holds a ``rules`` list to merge into the Prometheus
    Adapter's own configuration (its chart's ``rules.custom``); it exposes
    ``modelyard_inflight_requests`` as a ``pods`` metric for the model servers' HPA.
    """
    monitoring = values.monitoring
    extra = monitoring.labels
    objects: list[Manifest] = []
    if monitoring.service_monitor:
        objects.append(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "ServiceMonitor",
                "metadata": metadata(
                    name("modelyard", API), values.namespace, {**labels(API), **extra}
                ),
                "spec": {
                    "jobLabel": "app.kubernetes.io/component",
                    "namespaceSelector": {"matchNames": [values.namespace]},
                    "selector": {"matchLabels": _selector(API)},
                    "endpoints": [
                        {"port": "http", "path": "/metrics", "interval": monitoring.interval}
                    ],
                },
            }
        )
    if monitoring.pod_monitor:
        objects.append(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PodMonitor",
                "metadata": metadata(
                    name("modelyard", "pods"),
                    values.namespace,
                    {**labels("monitoring"), **extra},
                ),
                "spec": {
                    "namespaceSelector": {"any": True},
                    "selector": {
                        "matchLabels": {"app.kubernetes.io/managed-by": "modelyard"},
                        "matchExpressions": [
                            {
                                "key": "app.kubernetes.io/component",
                                "operator": "In",
                                "values": list(SCRAPED_COMPONENTS),
                            }
                        ],
                    },
                    "podMetricsEndpoints": [
                        {"port": port, "path": "/metrics", "interval": monitoring.interval}
                        for port in SCRAPED_PORTS
                    ],
                },
            }
        )
    if monitoring.prometheus_rule:
        objects.append(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PrometheusRule",
                "metadata": metadata(
                    "modelyard", values.namespace, {**labels("monitoring"), **extra}
                ),
                "spec": observability.prometheus_rules(),
            }
        )
    if monitoring.grafana_dashboard:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": metadata(
                    name("modelyard", "dashboard"),
                    values.namespace,
                    {**labels("monitoring"), **extra, "grafana_dashboard": "1"},
                ),
                "data": {"modelyard.json": observability.grafana_dashboard_json()},
            }
        )
    if monitoring.prometheus_adapter:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": metadata(
                    name("modelyard", "adapter-rules"),
                    values.namespace,
                    {**labels("monitoring"), **extra},
                ),
                "data": {"rules.yaml": observability.adapter_rules_yaml()},
            }
        )
    return objects


def network_policies(values: PlatformValues) -> list[Manifest]:
    """Default-deny ingress in the platform namespace, then: the ingress controller and
    the project namespaces' pods may reach the API; Prometheus may scrape metrics."""
    policy = values.network_policies
    base = labels("platform")

    def namespace_named(namespace: str) -> Manifest:
        return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}

    def netpol(policy_name: str, spec: Manifest) -> Manifest:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": metadata(policy_name, values.namespace, base),
            "spec": spec,
        }

    api_from: list[Manifest] = [
        {
            "namespaceSelector": {
                "matchExpressions": [{"key": "modelyard.io/project", "operator": "Exists"}]
            }
        }
    ]
    if values.ingress.enabled:
        api_from.insert(0, namespace_named(policy.ingress_namespace))
    return [
        netpol(
            "modelyard-default-deny-ingress",
            {"podSelector": {}, "policyTypes": ["Ingress"]},
        ),
        netpol(
            "modelyard-api-clients",
            {
                "podSelector": {"matchLabels": _selector(API)},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": api_from, "ports": [{"port": "http", "protocol": "TCP"}]}],
            },
        ),
        netpol(
            "modelyard-prometheus",
            {
                "podSelector": {
                    "matchExpressions": [
                        {
                            "key": "app.kubernetes.io/component",
                            "operator": "In",
                            "values": [API, CONTROLLERS],
                        }
                    ]
                },
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [namespace_named(policy.prometheus_namespace)],
                        "ports": [
                            {"port": "http", "protocol": "TCP"},
                            {"port": "metrics", "protocol": "TCP"},
                        ],
                    }
                ],
            },
        ),
    ]
