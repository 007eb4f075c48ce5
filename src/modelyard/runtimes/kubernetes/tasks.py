"""Pipeline work as ``batch/v1`` objects.

A task attempt is a Job of one pod with ``backoffLimit: 0``: retries stay modelyard's
(its retry policy, backoff and attempt records), so Kubernetes never runs an attempt
twice. The pod runs ``modelyard task run``, the same entrypoint as a local worker, and
reports its outcome in its termination message.

Schedules stay with the control plane's scheduler, which knows logical dates, catch-up,
``max_active_runs`` and pausing, none of which a CronJob has. For teams who keep
schedules in Git, :func:`schedule_cronjob` renders a CronJob that only asks the API to
queue a run; the run is still driven, retried and recorded by the control plane.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from modelyard.runtimes.container import JOB_VARIABLE, job_to_json
from modelyard.runtimes.jobs import Job
from modelyard.runtimes.kubernetes.objects import Manifest, labels, metadata, name
from modelyard.runtimes.kubernetes.pods import ContainerSpec, container, pod_spec
from modelyard.runtimes.kubernetes.settings import ClusterSettings
from modelyard.specs.schedules import ScheduleSpec

TASK_CONTAINER = "task"
# Finished Jobs stay an hour for `kubectl logs`; the runtime deletes those it has read.
FINISHED_TTL_SECONDS = 3600
SCHEDULER_TOKEN_SECRET = "modelyard-scheduler-token"  # noqa: S105 (a Secret's name)


def task_job_name(job: Job) -> str:
    meta = job.labels
    return name(
        "task",
        meta.get("run", "run")[-12:],
        meta.get("task", "task"),
        "a" + meta.get("attempt", "1"),
    )


def task_job(job: Job, settings: ClusterSettings) -> Manifest:
    """The Job running one task attempt."""
    meta = job.labels
    project = meta.get("project", "default")
    object_labels = labels(
        "task",
        project=project,
        run=meta.get("run"),
        task=meta.get("task"),
        attempt=meta.get("attempt"),
    )
    plain_env = {k: v for k, v in job.env.items() if k not in job.secret_env}
    spec = ContainerSpec(
        name=TASK_CONTAINER,
        args=["python", "-m", "modelyard.runtimes.container"],  # `modelyard task run`, lighter
        env={**plain_env, JOB_VARIABLE: job_to_json(job)},
        secrets=job.secret_env,
        resources=job.resources,
        # A process killed before it writes its outcome leaves its last log lines there.
        extra={"terminationMessagePolicy": "FallbackToLogsOnError"},
    )
    job_spec: Manifest = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": FINISHED_TTL_SECONDS,
        "template": {
            "metadata": {"labels": object_labels},
            "spec": pod_spec(
                settings,
                [container(settings, spec, job.image)],
                priority_class=settings.priority_classes.batch,
                restart_policy="Never",
                gpus=job.resources.gpu,
            ),
        },
    }
    if job.timeout:
        job_spec["activeDeadlineSeconds"] = max(1, round(job.timeout))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(task_job_name(job), settings.namespace(project), object_labels),
        "spec": job_spec,
    }


def schedule_cronjob(
    settings: ClusterSettings,
    *,
    project: str,
    pipeline: str,
    target: str,
    schedule: ScheduleSpec,
    api_url: str,
    params: Mapping[str, Any] | None = None,
) -> Manifest:
    """A CronJob that queues a run of ``target`` on the platform at every tick of
    ``schedule`` (``modelyard run --no-watch`` against ``api_url`` with the token in the
    ``modelyard-scheduler-token`` Secret)."""
    object_labels = labels("schedule", project=project, pipeline=pipeline)
    args = ["modelyard", "run", target, "--project", project, "--no-watch", "--output", "json"]
    for key, value in sorted({**schedule.params, **(params or {})}.items()):
        args += ["-P", f"{key}={json.dumps(value)}"]
    spec = ContainerSpec(name="queue-run", args=args, env={"MODELYARD_URL": api_url})
    pod = container(settings, spec)
    pod["env"].append(
        {
            "name": "MODELYARD_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": SCHEDULER_TOKEN_SECRET, "key": "token"}},
        }
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata(
            name(pipeline, "schedule", limit=52), settings.namespace(project), object_labels
        ),
        "spec": {
            "schedule": schedule.cron,
            "timeZone": schedule.timezone,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 300,
            "suspend": schedule.paused,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": object_labels},
                "spec": {
                    "backoffLimit": 2,
                    "ttlSecondsAfterFinished": FINISHED_TTL_SECONDS,
                    "template": {
                        "metadata": {"labels": object_labels},
                        "spec": pod_spec(
                            settings,
                            [pod],
                            priority_class=settings.priority_classes.batch,
                            restart_policy="Never",
                        ),
                    },
                },
            },
        },
    }
