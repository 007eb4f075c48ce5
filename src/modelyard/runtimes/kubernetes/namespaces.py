"""A project's namespace: its quota, container defaults, workload ServiceAccount and the
bindings that let the platform's controllers (and, read-only, its API) act in it.

The permissions themselves live in two ClusterRoles the platform installs
(:func:`workloads_role_name`, :func:`api_reader_role_name`); each project namespace only
binds them. A binding to a shared ClusterRole grants exactly what a namespaced Role
would, and it lets the Kubernetes runtime onboard a project on first use with no more
than ``bind`` on those two ClusterRoles: creating a Role would need the controllers to
hold every permission in it cluster-wide, or ``escalate``.
"""

from __future__ import annotations

from modelyard.runtimes.kubernetes.objects import (
    GPU_RESOURCE,
    Manifest,
    labels,
    metadata,
    name,
    quantities,
    quantity_cpu,
    quantity_memory,
)
from modelyard.runtimes.kubernetes.queues import local_queue
from modelyard.runtimes.kubernetes.settings import ClusterSettings, Quota

PLATFORM_NAMESPACE = "modelyard"
CONTROLLERS = "controllers"
API = "api"

# Baseline is enforced because user images (CUDA, Ray) often run as root; the restricted
# profile is still audited and warned about, so teams see what would break.
POD_SECURITY_ENFORCE = "baseline"
POD_SECURITY_AUDIT = "restricted"


def account_name(component: str) -> str:
    """The platform ServiceAccount of ``component`` (``api``, ``controllers``)."""
    return name("modelyard", component)


def workloads_role_name(platform_namespace: str) -> str:
    """The ClusterRole the controllers are bound to in every project namespace."""
    return name(platform_namespace, "workloads")


def api_reader_role_name(platform_namespace: str) -> str:
    """The read-only ClusterRole the API is bound to in every project namespace."""
    return name(platform_namespace, "api-reader")


def project_namespace(
    settings: ClusterSettings, project: str, *, platform_namespace: str = PLATFORM_NAMESPACE
) -> list[Manifest]:
    """Everything a project needs in the cluster before its first workload.

    Args:
        settings: The cluster settings (namespace prefix, quotas, workload account).
        project: The project's name (a DNS-1123 label).
        platform_namespace: Where the platform's API and controllers run; their
            ServiceAccounts are bound here by name.

    Returns:
        The Namespace, ResourceQuota, LimitRange, workload ServiceAccount, the Kueue
        LocalQueue when the platform owns the queue, and the RoleBindings of the
        controllers and of the API, in the order to apply them.
    """
    namespace = settings.namespace(project)
    quota = settings.quota_of(project)
    common = labels("project", project=project)
    namespace_labels = {
        **common,
        "pod-security.kubernetes.io/enforce": POD_SECURITY_ENFORCE,
        "pod-security.kubernetes.io/audit": POD_SECURITY_AUDIT,
        "pod-security.kubernetes.io/warn": POD_SECURITY_AUDIT,
    }
    objects: list[Manifest] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": metadata(namespace, None, namespace_labels),
        }
    ]
    hard = quota_hard(quota)
    if hard:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": metadata("modelyard-quota", namespace, common),
                "spec": {"hard": hard},
            }
        )
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": metadata("modelyard-defaults", namespace, common),
            "spec": {"limits": [limit_range_item(quota)]},
        }
    )
    account: Manifest = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(settings.service_account, namespace, common),
        # Workloads read data and artifacts, never the Kubernetes API.
        "automountServiceAccountToken": False,
    }
    if settings.image_pull_secrets:
        account["imagePullSecrets"] = [{"name": secret} for secret in settings.image_pull_secrets]
    objects.append(account)
    objects += local_queue(settings, project, common)
    for component, role in (
        (CONTROLLERS, workloads_role_name(platform_namespace)),
        (API, api_reader_role_name(platform_namespace)),
    ):
        objects.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": metadata(name("modelyard", component), namespace, common),
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [
                    {
                        "kind": "ServiceAccount",
                        "name": account_name(component),
                        "namespace": platform_namespace,
                    }
                ],
            }
        )
    return objects


def quota_hard(quota: Quota) -> dict[str, str]:
    """The ResourceQuota's ``hard`` limits; a None in the quota sets no limit.

    Memory bounds requests and limits alike, since every modelyard container's memory
    limit equals its request.
    """
    hard: dict[str, str] = {}
    if quota.cpu is not None:
        hard["requests.cpu"] = quantity_cpu(quota.cpu)
    if quota.memory is not None:
        hard["requests.memory"] = quantity_memory(quota.memory)
        hard["limits.memory"] = quantity_memory(quota.memory)
    if quota.gpu is not None:
        hard[f"requests.{GPU_RESOURCE}"] = str(quota.gpu)
    if quota.pods is not None:
        hard["pods"] = str(quota.pods)
    return hard


def limit_range_item(quota: Quota) -> Manifest:
    """Defaults for containers that ask for nothing, so the quota can admit them."""
    item: Manifest = {"type": "Container"}
    default_limit = quantities(quota.default_limit)
    default_request = quantities(quota.default_request)
    if default_limit:
        item["default"] = default_limit
    if default_request:
        item["defaultRequest"] = default_request
    return item
