"""The pinned CRD fixtures in ``crds/``: one minimal valid object per stored kind, shaped
like the upstream docs' examples, validates; broken variants raise InvalidObject."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.runtimes.kubernetes.validation import (
    CRDS,
    InvalidObject,
    crd_schemas,
    pod_template_paths,
    pod_templates,
    validate,
)

RAY_IMAGE = "rayproject/ray:2.41.0"


def pod_template(container: str, image: str, **container_fields: Any) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": container}},
        "spec": {
            "containers": [{"name": container, "image": image, **container_fields}],
            "restartPolicy": "Never",
        },
    }


def ray_cluster_spec() -> dict[str, Any]:
    return {
        "rayVersion": "2.41.0",
        "headGroupSpec": {
            "rayStartParams": {"num-cpus": "1"},
            "template": pod_template(
                "ray-head",
                RAY_IMAGE,
                ports=[{"containerPort": 6379, "name": "gcs-server"}],
                resources={"limits": {"cpu": "1", "memory": "2Gi"}},
            ),
        },
        "workerGroupSpecs": [
            {
                "groupName": "small-group",
                "replicas": 1,
                "minReplicas": 1,
                "maxReplicas": 5,
                "rayStartParams": {},
                "template": pod_template("ray-worker", RAY_IMAGE),
            }
        ],
    }


def ray_job() -> dict[str, Any]:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": "rayjob-sample"},
        "spec": {
            "entrypoint": "python /home/ray/samples/sample_code.py",
            "runtimeEnvYAML": "pip:\n  - requests==2.26.0\n",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 10,
            "rayClusterSpec": ray_cluster_spec(),
        },
    }


def ray_cluster() -> dict[str, Any]:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "raycluster-sample"},
        "spec": ray_cluster_spec(),
    }


def train_job() -> dict[str, Any]:
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "pytorch-simple"},
        "spec": {
            "runtimeRef": {"name": "torch-distributed"},
            "trainer": {
                "numNodes": 2,
                "image": "docker.io/kubeflow/pytorch-mnist:latest",
                "command": ["torchrun", "/workspace/train.py"],
                "env": [{"name": "EPOCHS", "value": "1"}],
                "resourcesPerNode": {"requests": {"nvidia.com/gpu": 1}},
            },
        },
    }


def pytorch_job() -> dict[str, Any]:
    image = "docker.io/kubeflowkatib/pytorch-mnist:v1beta1-45c5727"
    command = ["python3", "/opt/pytorch-mnist/mnist.py", "--epochs=1"]
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "pytorch-simple"},
        "spec": {
            "pytorchReplicaSpecs": {
                "Master": {
                    "replicas": 1,
                    "restartPolicy": "OnFailure",
                    "template": pod_template("pytorch", image, command=command),
                },
                "Worker": {
                    "replicas": 2,
                    "restartPolicy": "OnFailure",
                    "template": pod_template("pytorch", image, command=command),
                },
            },
            "runPolicy": {"cleanPodPolicy": "None", "ttlSecondsAfterFinished": 60},
        },
    }


def service_monitor() -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "example-app", "labels": {"team": "frontend"}},
        "spec": {
            "selector": {"matchLabels": {"app": "example-app"}},
            "endpoints": [{"port": "web", "interval": "30s", "path": "/metrics"}],
        },
    }


def pod_monitor() -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "example-app"},
        "spec": {
            "selector": {"matchLabels": {"app": "example-app"}},
            "podMetricsEndpoints": [{"port": "web", "interval": "15s"}],
        },
    }


def prometheus_rule() -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "prometheus-example-rules"},
        "spec": {
            "groups": [
                {
                    "name": "./example.rules",
                    "rules": [
                        {
                            "alert": "ExampleAlert",
                            "expr": "vector(1)",
                            "for": "5m",
                            "labels": {"severity": "warning"},
                        },
                        {"record": "job:up:sum", "expr": "sum by (job) (up)"},
                    ],
                }
            ]
        },
    }


def local_queue() -> dict[str, Any]:
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta1",
        "kind": "LocalQueue",
        "metadata": {"namespace": "default", "name": "user-queue"},
        "spec": {"clusterQueue": "cluster-queue"},
    }


def cluster_queue() -> dict[str, Any]:
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta1",
        "kind": "ClusterQueue",
        "metadata": {"name": "cluster-queue"},
        "spec": {
            "namespaceSelector": {},
            "resourceGroups": [
                {
                    "coveredResources": ["cpu", "memory"],
                    "flavors": [
                        {
                            "name": "default-flavor",
                            "resources": [
                                {"name": "cpu", "nominalQuota": 9},
                                {"name": "memory", "nominalQuota": "36Gi"},
                            ],
                        }
                    ],
                }
            ],
        },
    }


def resource_flavor() -> dict[str, Any]:
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta1",
        "kind": "ResourceFlavor",
        "metadata": {"name": "default-flavor"},
        "spec": {"nodeLabels": {"cloud.provider.com/instance": "spot"}},
    }


def pod_group() -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.volcano.sh/v1beta1",
        "kind": "PodGroup",
        "metadata": {"name": "test"},
        "spec": {
            "minMember": 2,
            "minResources": {"cpu": "3", "memory": "2048Mi"},
            "priorityClassName": "high-prority",
            "queue": "default",
        },
    }


def volcano_queue() -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.volcano.sh/v1beta1",
        "kind": "Queue",
        "metadata": {"name": "test"},
        "spec": {"weight": 1, "reclaimable": False, "capability": {"cpu": 2, "memory": "4Gi"}},
    }


VALID: dict[str, Callable[[], dict[str, Any]]] = {
    "ray.io/v1/RayJob": ray_job,
    "ray.io/v1/RayCluster": ray_cluster,
    "trainer.kubeflow.org/v1alpha1/TrainJob": train_job,
    "kubeflow.org/v1/PyTorchJob": pytorch_job,
    "monitoring.coreos.com/v1/ServiceMonitor": service_monitor,
    "monitoring.coreos.com/v1/PodMonitor": pod_monitor,
    "monitoring.coreos.com/v1/PrometheusRule": prometheus_rule,
    "kueue.x-k8s.io/v1beta1/LocalQueue": local_queue,
    "kueue.x-k8s.io/v1beta1/ClusterQueue": cluster_queue,
    "kueue.x-k8s.io/v1beta1/ResourceFlavor": resource_flavor,
    "scheduling.volcano.sh/v1beta1/PodGroup": pod_group,
    "scheduling.volcano.sh/v1beta1/Queue": volcano_queue,
}


def stored_kinds() -> set[str]:
    return {f"{api_version}/{kind}" for api_version, kind in crd_schemas()}


def test_every_stored_kind_has_an_example_and_a_pod_template_entry() -> None:
    assert stored_kinds() == set(VALID) == set(pod_template_paths())


@pytest.mark.parametrize("name", sorted(p.name for p in CRDS.glob("*.yaml")))
def test_fixture_is_a_valid_custom_resource_definition(name: str) -> None:
    (crd,) = [doc for doc in yaml.safe_load_all((CRDS / name).read_text()) if doc]
    validate(crd)
    spec = crd["spec"]
    assert name == f"{spec['group']}_{spec['names']['plural']}.yaml"


def _schema_at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    for step in path.split("."):
        if step == "*":
            schema = schema["additionalProperties"]
        else:
            schema = schema["properties"][step.removesuffix("[]")]
            if step.endswith("[]"):
                schema = schema["items"]
    return schema


def test_pod_template_paths_point_at_objects_in_the_schemas() -> None:
    schemas = {f"{api_version}/{kind}": s for (api_version, kind), s in crd_schemas().items()}
    for key, paths in pod_template_paths().items():
        for path in paths:
            assert _schema_at(schemas[key], path)["type"] == "object", (key, path)


@pytest.mark.parametrize("key", sorted(VALID))
def test_minimal_example_validates(key: str) -> None:
    obj = VALID[key]()
    assert f"{obj['apiVersion']}/{obj['kind']}" == key
    validate(obj)


def test_pod_templates_are_found_at_their_paths() -> None:
    found = [where for where, _ in pod_templates(ray_job())]
    assert found == [
        "spec.rayClusterSpec.headGroupSpec.template",
        "spec.rayClusterSpec.workerGroupSpecs[0].template",
    ]
    found = [where for where, _ in pod_templates(pytorch_job())]
    assert found == [
        "spec.pytorchReplicaSpecs.Master.template",
        "spec.pytorchReplicaSpecs.Worker.template",
    ]


def _set(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    *parents, last = path.split(".")
    node: Any = obj
    for step in parents:
        node = node[int(step)] if isinstance(node, list) else node[step]
    node[last] = value
    return obj


def _drop(obj: dict[str, Any], path: str) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    *parents, last = path.split(".")
    node: Any = obj
    for step in parents:
        node = node[int(step)] if isinstance(node, list) else node[step]
    del node[last]
    return obj


BROKEN: list[tuple[str, Callable[[], dict[str, Any]], str]] = [
    # wrong types
    ("rayjob-bool", lambda: _set(ray_job(), "spec.shutdownAfterJobFinishes", "yes"), "yes"),
    ("rayjob-ttl", lambda: _set(ray_job(), "spec.ttlSecondsAfterFinished", "10s"), "10s"),
    (
        "raycluster-replicas",
        lambda: _set(ray_cluster(), "spec.workerGroupSpecs.0.replicas", "one"),
        "one",
    ),
    (
        "pytorchjob-replicas",
        lambda: _set(pytorch_job(), "spec.pytorchReplicaSpecs.Worker.replicas", "two"),
        "two",
    ),
    (
        "servicemonitor-interval",
        lambda: _set(service_monitor(), "spec.endpoints.0.interval", "30 s"),
        "30 s",
    ),
    (
        "podmonitor-port",
        lambda: _set(pod_monitor(), "spec.podMetricsEndpoints.0.portNumber", 70000),
        "70000",
    ),
    (
        "clusterqueue-strategy",
        lambda: _set(cluster_queue(), "spec.queueingStrategy", "LIFO"),
        "LIFO",
    ),
    (
        "localqueue-name",
        lambda: _set(local_queue(), "spec.clusterQueue", "Cluster_Queue"),
        "Cluster_Queue",
    ),
    ("podgroup-minmember", lambda: _set(pod_group(), "spec.minMember", "two"), "two"),
    ("queue-weight", lambda: _set(volcano_queue(), "spec.weight", "heavy"), "heavy"),
    ("trainjob-numnodes", lambda: _set(train_job(), "spec.trainer.numNodes", "two"), "two"),
    ("trainjob-runtime-name", lambda: _set(train_job(), "spec.runtimeRef.name", ""), "runtimeRef"),
    # missing required fields
    ("trainjob-runtimeref", lambda: _drop(train_job(), "spec.runtimeRef"), "runtimeRef"),
    (
        "trainjob-patch-env-name",
        lambda: _set(
            train_job(),
            "spec.runtimePatches",
            [
                {
                    "manager": "example.com/manager",
                    "trainingRuntimeSpec": {
                        "template": {
                            "spec": {
                                "replicatedJobs": [
                                    {
                                        "name": "node",
                                        "template": {
                                            "spec": {
                                                "template": {
                                                    "spec": {
                                                        "containers": [
                                                            {
                                                                "name": "node",
                                                                "env": [{"value": "1"}],
                                                            }
                                                        ]
                                                    }
                                                }
                                            }
                                        },
                                    }
                                ]
                            }
                        }
                    },
                }
            ],
        ),
        "'name' is a required property",
    ),
    ("rayjob-entrypoint", lambda: _drop(ray_job(), "spec.entrypoint"), "entrypoint"),
    ("raycluster-head", lambda: _drop(ray_cluster(), "spec.headGroupSpec"), "headGroupSpec"),
    (
        "pytorchjob-specs",
        lambda: _drop(pytorch_job(), "spec.pytorchReplicaSpecs"),
        "pytorchReplicaSpecs",
    ),
    ("servicemonitor-selector", lambda: _drop(service_monitor(), "spec.selector"), "selector"),
    ("prometheusrule-expr", lambda: _drop(prometheus_rule(), "spec.groups.0.rules.0.expr"), "expr"),
    (
        "resourceflavor-taint",
        lambda: _set(resource_flavor(), "spec.nodeTaints", [{"key": "spot"}]),
        "effect",
    ),
    # unknown (misspelled) fields inside embedded Pod templates
    (
        "rayjob-worker-container",
        lambda: _set(
            ray_job(),
            "spec.rayClusterSpec.workerGroupSpecs.0.template.spec.containers.0.imagePullPolcy",
            "Always",
        ),
        "workerGroupSpecs[0].template",
    ),
    (
        "raycluster-head-container",
        lambda: _set(
            ray_cluster(), "spec.headGroupSpec.template.spec.containers.0.comand", ["ray"]
        ),
        "headGroupSpec.template",
    ),
    (
        "rayjob-submitter",
        lambda: _set(
            ray_job(), "spec.submitterPodTemplate", pod_template("submitter", RAY_IMAGE, argz=[])
        ),
        "spec.submitterPodTemplate",
    ),
    (
        "pytorchjob-master-container",
        lambda: _set(
            pytorch_job(),
            "spec.pytorchReplicaSpecs.Master.template.spec.containers.0.resource",
            {"limits": {"cpu": "1"}},
        ),
        "pytorchReplicaSpecs.Master.template",
    ),
    (
        "pytorchjob-worker-missing-image-type",
        lambda: _set(
            pytorch_job(), "spec.pytorchReplicaSpecs.Worker.template.spec.containers", "x"
        ),
        "pytorchReplicaSpecs.Worker.template",
    ),
]


@pytest.mark.parametrize(
    ("make", "needle"), [(m, n) for _, m, n in BROKEN], ids=[i for i, _, _ in BROKEN]
)
def test_broken_example_is_rejected(make: Callable[[], dict[str, Any]], needle: str) -> None:
    with pytest.raises(InvalidObject, match=None) as caught:
        validate(make())
    assert needle in str(caught.value)
