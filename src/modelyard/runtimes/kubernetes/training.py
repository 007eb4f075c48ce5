"""Distributed training jobs as Kubeflow objects: a Trainer v2 ``TrainJob`` (default) or
a Training Operator v1 ``PyTorchJob``.

Workers get the wiring they get locally: ``torchrun`` under a TrainJob (whose torch
runtime sets its ``PET_*`` variables) and the operator's own ``MASTER_ADDR``,
``MASTER_PORT``, ``WORLD_SIZE`` and ``RANK`` under a PyTorchJob give every process the
variables the local launcher gives it, so ``init_process_group("gloo"|"nccl")`` and the
checkpoint helper run unchanged. Function entrypoints run through the same
``modelyard.training.worker`` as locally.

Restarts are modelyard's, as on this machine and on Ray: an attempt is one object
whose operator restarts nothing (a PyTorchJob's replicas never restart and its backoff
limit is 0; a TrainJob's ClusterTrainingRuntime must not restart its JobSet, which is
JobSet's default), and the job's ``FailurePolicy`` judges how its pods ended
(``trainjobs``). Each worker's report (its exception, or rank 0's result) is written to
the pod's termination message, where the API server hands it back.

Gang scheduling: with Kueue the job carries ``kueue.x-k8s.io/queue-name`` and Kueue
admits all of its pods or none; with Volcano a PyTorchJob asks the operator for a
PodGroup of ``minAvailable = workers`` in the configured queue (a TrainJob's gang
policy lives in its ClusterTrainingRuntime's ``podGroupPolicy``).
"""

from __future__ import annotations

import json
from typing import Any

from modelyard.runtimes.kubernetes.objects import (
    Manifest,
    env_list,
    labels,
    metadata,
    name,
    resource_requirements,
    secret_env,
)
from modelyard.runtimes.kubernetes.pods import (
    ARTIFACTS_VOLUME,
    CONTAINER_SECURITY,
    POD_SECURITY,
    ContainerSpec,
    container,
    pod_spec,
    workload_env,
)
from modelyard.runtimes.kubernetes.settings import ClusterSettings, GangScheduler
from modelyard.specs.training import TrainingJobSpec

CHECKPOINT_VOLUME = "checkpoints"
CHECKPOINT_MOUNT = "/checkpoints"
# Kubernetes' default terminationMessagePath: the kubelet returns what a worker writes
# there (its report) as the pod's termination message, with no container field to set.
REPORT_FILE = "/dev/termination-log"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def worker_command(spec: TrainingJobSpec) -> list[str]:
    """What each worker process runs (without the launcher in front)."""
    if spec.is_script:
        return [spec.entrypoint, *spec.args]
    return [
        "-m",
        "modelyard.training.worker",
        spec.entrypoint,
        json.dumps(spec.params, sort_keys=True),
        REPORT_FILE,
    ]


def checkpoint_dir(spec: TrainingJobSpec, settings: ClusterSettings) -> str:
    if spec.checkpoint_dir:
        return spec.checkpoint_dir
    if settings.checkpoint_pvc:
        return f"{CHECKPOINT_MOUNT}/{spec.name}"
    if settings.artifacts.pvc:
        return f"{settings.artifacts.mount_path}/checkpoints/{spec.name}"
    return f"/tmp/checkpoints/{spec.name}"  # noqa: S108 (per pod: no resume across pods)


def job_env(spec: TrainingJobSpec, settings: ClusterSettings) -> dict[str, str]:
    threads = str(max(1, int(spec.resources.cpu))) if spec.resources.cpu else "1"
    return {
        "OMP_NUM_THREADS": threads,
        **spec.env,
        "MODELYARD_JOB": spec.name,
        "MODELYARD_CHECKPOINT_DIR": checkpoint_dir(spec, settings),
    }


def render_training_job(
    spec: TrainingJobSpec,
    settings: ClusterSettings,
    project: str,
    attempt: int = 1,
    instance: str = "",
) -> list[Manifest]:
    """The objects of ``spec``'s ``attempt``: one TrainJob or PyTorchJob (see
    :func:`object_name` for ``instance``)."""
    called = object_name(spec, attempt, instance)
    if settings.training_operator == "pytorchjob":
        return [pytorchjob(spec, settings, project, called)]
    return [trainjob(spec, settings, project, called)]


def object_name(spec: TrainingJobSpec, attempt: int = 1, instance: str = "") -> str:
    """``train-<job>``, then ``-<instance>`` (what tells this job from others of its
    name: the launcher gives a piece of the job's id) and ``-<n>`` for the n-th attempt
    after the first."""
    return name("train", spec.name, instance, str(attempt) if attempt > 1 else "")


def _job_labels(spec: TrainingJobSpec, settings: ClusterSettings, project: str) -> dict[str, str]:
    result = labels("training", project=project, job=spec.name)
    if settings.gang_scheduler is GangScheduler.KUEUE:
        result[KUEUE_QUEUE_LABEL] = settings.queue
    return result


def _checkpoint_volume(settings: ClusterSettings) -> tuple[list[Manifest], list[Manifest]]:
    """The checkpoint claim's volume and mount, when there is one."""
    if not settings.checkpoint_pvc:
        return [], []
    return (
        [
            {
                "name": CHECKPOINT_VOLUME,
                "persistentVolumeClaim": {"claimName": settings.checkpoint_pvc},
            }
        ],
        [{"name": CHECKPOINT_VOLUME, "mountPath": CHECKPOINT_MOUNT}],
    )


def trainjob(
    spec: TrainingJobSpec, settings: ClusterSettings, project: str, called: str = ""
) -> Manifest:
    """A Kubeflow Trainer v2 TrainJob on the ``settings.training_runtime``
    ClusterTrainingRuntime (torch: every node runs ``torchrun``)."""
    env = env_list({**workload_env(settings), **job_env(spec, settings)})
    env += secret_env(settings.project_secret, spec.secrets)
    if settings.artifacts.credentials_secret and not settings.artifacts.pvc:
        env += secret_env(
            settings.artifacts.credentials_secret, ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        )
    trainer: Manifest = {
        "image": settings.image,
        "command": ["torchrun", *worker_command(spec)],
        "numNodes": spec.workers,
        "env": env,
    }
    requirements = resource_requirements(spec.resources)
    if requirements:
        trainer["resourcesPerNode"] = requirements
    object_labels = _job_labels(spec, settings, project)
    job_spec: Manifest = {
        "runtimeRef": {
            "apiGroup": "trainer.kubeflow.org",
            "kind": "ClusterTrainingRuntime",
            "name": settings.training_runtime,
        },
        "trainer": trainer,
        "runtimePatches": [_placement(spec, settings, object_labels)],
    }
    if spec.timeout:
        job_spec["activeDeadlineSeconds"] = int(spec.timeout.total_seconds())
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": metadata(
            called or object_name(spec), settings.namespace(project), object_labels
        ),
        "spec": job_spec,
    }


TRAINER_NODE = "node"  # the torch runtime's replicated job and container


def _placement(
    spec: TrainingJobSpec, settings: ClusterSettings, object_labels: dict[str, str]
) -> Manifest:
    """What a TrainJob adds to its runtime's pods: the account, security context,
    labels, GPU placement and volumes (priority comes with the ClusterTrainingRuntime,
    or from Kueue's WorkloadPriorityClass)."""
    pod: Manifest = {
        "serviceAccountName": settings.service_account,
        "securityContext": dict(POD_SECURITY),
        "containers": [{"name": TRAINER_NODE, "securityContext": dict(CONTAINER_SECURITY)}],
    }
    if settings.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": secret} for secret in settings.image_pull_secrets]
    if spec.resources.gpu:
        pod["nodeSelector"] = dict(settings.gpu.node_selector)
        pod["tolerations"] = [dict(toleration) for toleration in settings.gpu.tolerations]
    volumes, mounts = _checkpoint_volume(settings)
    if settings.artifacts.pvc:
        volumes.append(
            {
                "name": ARTIFACTS_VOLUME,
                "persistentVolumeClaim": {"claimName": settings.artifacts.pvc},
            }
        )
        mounts.append({"name": ARTIFACTS_VOLUME, "mountPath": settings.artifacts.mount_path})
    if volumes:
        pod["volumes"] = volumes
        pod["containers"][0]["volumeMounts"] = mounts
    pod_labels = {k: v for k, v in object_labels.items() if k != KUEUE_QUEUE_LABEL}
    return {
        "manager": "modelyard.io/placement",
        "trainingRuntimeSpec": {
            "template": {
                "spec": {
                    "replicatedJobs": [
                        {
                            "name": TRAINER_NODE,
                            "template": {
                                "spec": {
                                    "template": {"metadata": {"labels": pod_labels}, "spec": pod}
                                }
                            },
                        }
                    ]
                }
            }
        },
    }


def pytorchjob(
    spec: TrainingJobSpec, settings: ClusterSettings, project: str, called: str = ""
) -> Manifest:
    """A Training Operator v1 PyTorchJob: a Master and ``workers - 1`` Workers that the
    operator never restarts (the job's FailurePolicy decides on another attempt)."""
    volumes, mounts = _checkpoint_volume(settings)
    worker = container(
        settings,
        ContainerSpec(
            name="pytorch",  # the operator finds the training container by this name
            args=["python", *worker_command(spec)],
            env=job_env(spec, settings),
            secrets=spec.secrets,
            resources=spec.resources,
            ports={"pytorchjob-port": 23456},
        ),
    )
    if mounts:
        worker["volumeMounts"] = worker.get("volumeMounts", []) + mounts
    volcano = settings.gang_scheduler is GangScheduler.VOLCANO
    pod = pod_spec(
        settings,
        [worker],
        priority_class=settings.priority_classes.training,
        restart_policy="Never",
        gpus=spec.resources.gpu,
        extra={"schedulerName": "volcano"} if volcano else None,
    )
    if volumes:
        pod["volumes"] = pod.get("volumes", []) + volumes
    pod.pop("restartPolicy")  # the replica's restartPolicy governs
    object_labels = _job_labels(spec, settings, project)
    template_labels = {k: v for k, v in object_labels.items() if k != KUEUE_QUEUE_LABEL}

    def replicas(count: int) -> Manifest:
        return {
            "replicas": count,
            "restartPolicy": "Never",
            "template": {"metadata": {"labels": template_labels}, "spec": pod},
        }

    replica_specs: dict[str, Any] = {"Master": replicas(1)}
    if spec.workers > 1:
        replica_specs["Worker"] = replicas(spec.workers - 1)
    run_policy: Manifest = {
        "backoffLimit": 0,
        "cleanPodPolicy": "None",
    }
    if spec.timeout:
        run_policy["activeDeadlineSeconds"] = int(spec.timeout.total_seconds())
    if volcano:
        run_policy["schedulingPolicy"] = {"minAvailable": spec.workers, "queue": settings.queue}
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": metadata(
            called or object_name(spec), settings.namespace(project), object_labels
        ),
        "spec": {"runPolicy": run_policy, "pytorchReplicaSpecs": replica_specs},
    }
