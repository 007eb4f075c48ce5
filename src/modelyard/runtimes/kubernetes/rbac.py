"""The platform's identities and permissions: its ServiceAccounts, the controllers'
cluster-wide ClusterRole (find project namespaces and, when allowed, onboard new ones) and
the two ClusterRoles each project namespace binds (workloads for the controllers,
read-only for the API). Every rule names its verbs and resources: never ``*``."""

from __future__ import annotations

from modelyard.runtimes.kubernetes.namespaces import (
    API,
    CONTROLLERS,
    account_name,
    api_reader_role_name,
    workloads_role_name,
)
from modelyard.runtimes.kubernetes.objects import Manifest, labels, metadata, name
from modelyard.runtimes.kubernetes.platform_values import PlatformValues
from modelyard.runtimes.kubernetes.queues import uses_local_queues


def service_accounts(values: PlatformValues) -> list[Manifest]:
    accounts = []
    for component in (API, CONTROLLERS):
        account: Manifest = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": metadata(account_name(component), values.namespace, labels(component)),
        }
        if values.image_pull_secrets:
            account["imagePullSecrets"] = [{"name": s} for s in values.image_pull_secrets]
        accounts.append(account)
    return accounts


_ALL = ["get", "list", "watch", "create", "update", "patch", "delete"]
_READ = ["get", "list", "watch"]


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> Manifest:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


def workload_rules() -> list[Manifest]:
    """What the controllers do in a project namespace: run and watch workloads."""
    return [
        _rule(["batch"], ["jobs", "cronjobs"], _ALL),
        _rule([""], ["pods"], [*_READ, "delete"]),
        _rule([""], ["pods/log"], ["get"]),
        _rule([""], ["events"], _READ),
        _rule([""], ["services", "configmaps"], _ALL),
        # Project secrets are written and read by key, never listed.
        _rule([""], ["secrets"], ["get", "create", "update", "patch", "delete"]),
        _rule(["apps"], ["deployments"], _ALL),
        _rule(["autoscaling"], ["horizontalpodautoscalers"], _ALL),
        _rule(["policy"], ["poddisruptionbudgets"], _ALL),
        _rule(["trainer.kubeflow.org"], ["trainjobs"], _ALL),
        _rule(["kubeflow.org"], ["pytorchjobs"], _ALL),
        _rule(["ray.io"], ["rayjobs", "rayclusters"], _ALL),
    ]


def api_reader_rules() -> list[Manifest]:
    """What the API reads in a project namespace: workload state, pod logs and events."""
    return [
        _rule([""], ["pods", "events"], _READ),
        _rule([""], ["pods/log"], ["get"]),
        _rule(["batch"], ["jobs"], _READ),
    ]


def controller_cluster_rules(values: PlatformValues) -> list[Manifest]:
    """Cluster-wide: find project namespaces and, when allowed, onboard new ones."""
    if not values.rbac.manage_project_namespaces:
        return [_rule([""], ["namespaces"], _READ)]
    queue = []
    if uses_local_queues(values.workloads):  # a new project gets its LocalQueue too
        queue = [_rule(["kueue.x-k8s.io"], ["localqueues"], ["get", "create", "patch"])]
    return [
        _rule([""], ["namespaces"], [*_READ, "create", "patch"]),
        _rule(
            [""],
            ["resourcequotas", "limitranges", "serviceaccounts"],
            ["get", "create", "patch"],
        ),
        *queue,
        _rule(["rbac.authorization.k8s.io"], ["rolebindings"], ["get", "create", "patch"]),
        {
            "apiGroups": ["rbac.authorization.k8s.io"],
            "resources": ["clusterroles"],
            "verbs": ["bind"],
            "resourceNames": [
                workloads_role_name(values.namespace),
                api_reader_role_name(values.namespace),
            ],
        },
    ]


def cluster_rbac(values: PlatformValues) -> list[Manifest]:
    """The controllers' ClusterRole and binding, and the two ClusterRoles that project
    namespaces bind (workloads for the controllers, read-only for the API)."""
    controllers = name(values.namespace, CONTROLLERS)
    return [
        _cluster_role(controllers, CONTROLLERS, controller_cluster_rules(values)),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": metadata(controllers, None, labels(CONTROLLERS)),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": controllers,
            },
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": account_name(CONTROLLERS),
                    "namespace": values.namespace,
                }
            ],
        },
        _cluster_role(workloads_role_name(values.namespace), CONTROLLERS, workload_rules()),
        _cluster_role(api_reader_role_name(values.namespace), API, api_reader_rules()),
    ]


def _cluster_role(role: str, component: str, rules: list[Manifest]) -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": metadata(role, None, labels(component)),
        "rules": rules,
    }
