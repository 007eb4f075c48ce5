"""How modelyard's workloads are placed on a cluster: one set of settings shared by the
runtime that applies them, ``modelyard render`` and the platform's values."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, field_validator

from modelyard._version import __version__
from modelyard.runtimes.kubernetes.objects import GPU_RESOURCE
from modelyard.specs.common import Spec
from modelyard.specs.resources import Cores, MemoryBytes, Resources

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class GangScheduler(StrEnum):
    """Who admits a distributed job's pods all together, or none of them."""

    NONE = "none"
    KUEUE = "kueue"  # jobs carry kueue.x-k8s.io/queue-name; Kueue admits the whole workload
    VOLCANO = "volcano"  # pods go to the volcano scheduler, in one PodGroup


class ArtifactStorage(Spec):
    """Where pods find the artifact store: S3-compatible storage (credentials from a
    Secret) or a ReadWriteMany volume mounted in every pod.

    Args:
        url: The artifact store's URL as pods see it (``s3://bucket/prefix`` or a path
            under ``mount_path`` when ``pvc`` is set).
        s3_endpoint: An S3-compatible endpoint (MinIO, Ceph); None: AWS.
        credentials_secret: A Secret with ``AWS_ACCESS_KEY_ID`` and
            ``AWS_SECRET_ACCESS_KEY``, given to pods as variables.
        pvc: A ReadWriteMany PersistentVolumeClaim holding the store instead.
        mount_path: Where that claim is mounted.
    """

    url: str = "s3://modelyard/artifacts"
    s3_endpoint: str | None = None
    credentials_secret: str | None = "modelyard-s3"  # noqa: S105 (a Secret's name)
    pvc: str | None = None
    mount_path: str = "/var/lib/modelyard"


class GpuPlacement(Spec):
    """What a pod that asks for GPUs also gets, to land on (and be let onto) GPU nodes."""

    node_selector: dict[str, str] = Field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"}
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=lambda: [
            {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
        ]
    )


class PriorityClasses(Spec):
    """PriorityClass names: serving above training above pipeline tasks, so a node under
    pressure preempts batch work before an endpoint's replicas."""

    serving: str = "modelyard-serving"
    training: str = "modelyard-training"
    batch: str = "modelyard-batch"


class Quota(Spec):
    """A project's share of the cluster (its namespace's ResourceQuota) and the defaults
    its containers get when they ask for nothing (its LimitRange)."""

    cpu: Cores | None = 16
    memory: MemoryBytes | None = 64 * 2**30
    gpu: int | None = Field(default=0, ge=0)
    pods: int | None = Field(default=100, ge=1)
    default_request: Resources = Resources(cpu=0.25, memory=256 * 2**20)
    default_limit: Resources = Resources(memory=2 * 2**30)


class ClusterSettings(Spec):
    """Where and how workloads run on Kubernetes.

    Args:
        image: The image every workload starts from (modelyard and the user's code;
            a task may name its own with ``env.image``).
        image_pull_policy: As Kubernetes spells it.
        image_pull_secrets: Secrets for a private registry.
        namespace_prefix: A project ``p`` lives in namespace ``<prefix>p``.
        single_namespace: One namespace for every project instead (``render --namespace``).
        service_account: The ServiceAccount workload pods run as.
        project_secret: The Secret in each project namespace holding the project's
            secrets, one key per secret; tasks reference keys, never values.
        driver_secret: A Secret in each project namespace with ``MODELYARD_DATABASE_URL``
            and ``MODELYARD_SECRET_KEY``, for the drivers of Ray jobs, which record
            their runs in the platform's store as the controllers do.
        tracking_uri: The MLflow server workloads log to.
        artifacts: Where the artifact store is.
        gpu: How GPU pods are placed.
        priority_classes: Priorities of serving, training and pipeline pods.
        gang_scheduler: Who admits distributed training all at once.
        queue: The Kueue LocalQueue or Volcano queue of gang-scheduled jobs.
        queue_capacity: What that queue admits at once across projects; the platform
            then renders it (Kueue: ResourceFlavor, ClusterQueue and a LocalQueue per
            project namespace; Volcano: a Queue). None: the queue is the admin's own.
        training_operator: TrainJob (Kubeflow Trainer v2) or PyTorchJob (v1).
        training_runtime: The ClusterTrainingRuntime a TrainJob refers to.
        checkpoint_pvc: A ReadWriteMany PersistentVolumeClaim for training checkpoints,
            mounted at ``/checkpoints`` in every worker, so a restarted gang resumes on
            any node; None: the artifact store's volume when it is one, else none (a
            restarted job starts over).
        ray_cluster: An existing RayCluster to submit Ray jobs to (its name); None
            starts an ephemeral cluster per job.
        ray_ttl_seconds: How long an ephemeral Ray cluster stays after its job ends.
        ray_version: The Ray version of the image (KubeRay asks for it).
        quota: Every project's quota, unless ``project_quotas`` names it.
        project_quotas: Quotas of given projects.
        topology_keys: Replicas are spread across these node labels (hostname, zone).
    """

    image: str = f"modelyard/modelyard:{__version__}"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    namespace_prefix: str = Field(default="modelyard-", pattern=r"^[a-z0-9-]{0,30}$")
    single_namespace: str | None = Field(
        default=None, pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
    )
    service_account: str = "modelyard-workload"
    project_secret: str = "modelyard-project-secrets"  # noqa: S105 (a Secret's name)
    driver_secret: str = "modelyard-driver"  # noqa: S105 (a Secret's name)
    tracking_uri: str | None = None
    artifacts: ArtifactStorage = ArtifactStorage()
    gpu: GpuPlacement = GpuPlacement()
    priority_classes: PriorityClasses = PriorityClasses()
    gang_scheduler: GangScheduler = GangScheduler.NONE
    queue: str = Field(default="modelyard", pattern=DNS_LABEL)
    queue_capacity: Resources | None = None
    training_operator: Literal["trainjob", "pytorchjob"] = "trainjob"
    training_runtime: str = "torch-distributed"
    checkpoint_pvc: str | None = None
    ray_cluster: str | None = None
    ray_ttl_seconds: int = Field(default=300, ge=0)
    ray_version: str = "2.40.0"
    quota: Quota = Quota()
    project_quotas: dict[str, Quota] = Field(default_factory=dict)
    topology_keys: tuple[str, ...] = ("kubernetes.io/hostname", "topology.kubernetes.io/zone")

    @field_validator("queue_capacity")
    @classmethod
    def _capacity_names_a_resource(cls, value: Resources | None) -> Resources | None:
        if value is not None and value.cpu is None and value.memory is None and not value.gpu:
            raise ValueError("a queue's capacity names at least one of cpu, memory and gpu")
        return value

    def namespace(self, project: str) -> str:
        """The namespace of ``project`` (a project name is already a DNS-1123 label)."""
        if self.single_namespace:
            return self.single_namespace
        return f"{self.namespace_prefix}{project}"[:63].rstrip("-")

    def quota_of(self, project: str) -> Quota:
        return self.project_quotas.get(project, self.quota)
