"""The Kubernetes runtime: each task attempt a Job, applied with server-side apply and
watched until its pod ends; the pod's termination message, status and events become
the attempt's Outcome (see ``failures``), and its log the attempt's log.

The cluster is reached through a small :class:`Cluster` interface; :class:`KubeCluster`
implements it with the official ``kubernetes`` client (in-cluster configuration, else
``KUBECONFIG``), imported only when the runtime is used.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import ValidationError

from modelyard.config import Settings
from modelyard.errors import InvalidInputError
from modelyard.runtimes.jobs import Job, Outcome, OutcomeKind
from modelyard.runtimes.kubernetes.failures import job_state, pod_outcome
from modelyard.runtimes.kubernetes.namespaces import PLATFORM_NAMESPACE, project_namespace
from modelyard.runtimes.kubernetes.objects import FIELD_MANAGER, Manifest
from modelyard.runtimes.kubernetes.platform_values import load_values
from modelyard.runtimes.kubernetes.settings import ClusterSettings
from modelyard.runtimes.kubernetes.tasks import TASK_CONTAINER, task_job

logger = logging.getLogger(__name__)

PENDING_TIMEOUT = timedelta(minutes=10)


class Cluster(Protocol):
    """What the runtime needs of a Kubernetes API server."""

    def apply(self, obj: Manifest) -> None:
        """Server-side apply ``obj`` (create or update) as modelyard's field manager."""
        ...

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest | None: ...

    def objects(self, api_version: str, kind: str, namespace: str, selector: str) -> list[Manifest]:
        """Objects of a kind matching a label selector."""
        ...

    def pods(self, namespace: str, selector: str) -> list[Manifest]:
        """Pods matching a label selector, as the API returns them (camelCase dicts)."""
        ...

    def events(self, namespace: str, involved: str) -> list[Manifest]: ...

    def log(self, namespace: str, pod: str, container: str) -> str: ...

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """Delete an object and, in the background, what it owns; gone already is fine."""
        ...


def load_cluster_settings(values: Path | None) -> ClusterSettings:
    """The ``workloads`` section of the platform's values file, merged into the
    defaults as Helm merges it (defaults without a file).

    Raises:
        InvalidInputError: the file cannot be read or holds invalid values.
    """
    if values is None:
        return ClusterSettings()
    try:
        loaded = yaml.safe_load(values.read_text()) or {}
        return load_values(loaded).workloads
    except (OSError, yaml.YAMLError, ValidationError, AttributeError) as exc:
        raise InvalidInputError(
            f"cannot use {values} as the platform's values: {exc}", code="runtime/invalid"
        ) from exc


class KubernetesRuntime:
    """Runs jobs as Kubernetes Jobs (one pod, ``backoffLimit: 0``).

    Args:
        settings: Where and how pods run.
        cluster: The API server (default: from the environment, with the official client).
        poll_seconds: How often a running job's pod is looked at.
        pending_timeout: How long a pod may wait to be scheduled.
        parallel: Jobs watched at once (each watcher is a thread that mostly sleeps).
        platform_namespace: Where the platform's controllers and API run (a project's
            namespace binds their accounts).
    """

    name = "kubernetes"
    supports_gpus = True
    supports_gang_scheduling = True

    def __init__(
        self,
        settings: ClusterSettings,
        cluster: Cluster | None = None,
        *,
        poll_seconds: float = 1.0,
        pending_timeout: timedelta = PENDING_TIMEOUT,
        parallel: int = 64,
        platform_namespace: str = PLATFORM_NAMESPACE,
    ) -> None:
        self.settings = settings
        self.platform_namespace = platform_namespace
        self.cluster = cluster if cluster is not None else KubeCluster.from_environment()
        self.poll_seconds = poll_seconds
        self.pending_timeout = pending_timeout
        self._threads = ThreadPoolExecutor(parallel, thread_name_prefix="k8s-job")
        self._namespaces: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, workers: int | None = None) -> KubernetesRuntime:
        del workers  # the cluster decides how many pods run
        return cls(
            load_cluster_settings(settings.kubernetes_values),
            platform_namespace=settings.platform_namespace,
        )

    def submit(self, job: Job, cancel: threading.Event | None = None) -> Future[Outcome]:
        return self._threads.submit(self._run, job, cancel or threading.Event())

    def close(self) -> None:
        self._threads.shutdown(wait=True)

    # -- one job --------------------------------------------------------------------

    def _run(self, job: Job, cancel: threading.Event) -> Outcome:
        started = time.monotonic()
        try:
            outcome = self._watch(self._start(job), job, cancel)
        except Exception as exc:  # the API refused or failed: this attempt crashed
            logger.warning("kubernetes job for %s failed to run", job.labels, exc_info=True)
            outcome = Outcome(
                kind=OutcomeKind.CRASHED,
                error_type=f"kubernetes.{type(exc).__name__}",
                error_message=f"the cluster could not run the job: {exc}",
            )
        return replace(outcome, seconds=time.monotonic() - started)

    def _start(self, job: Job) -> Manifest:
        manifest = task_job(_portable(job), self.settings)
        namespace = manifest["metadata"]["namespace"]
        with self._lock:
            fresh = namespace not in self._namespaces
            self._namespaces.add(namespace)
        if fresh:  # the project's namespace, quota and accounts, once per runtime
            project = job.labels.get("project", "default")
            for obj in project_namespace(
                self.settings, project, platform_namespace=self.platform_namespace
            ):
                self.cluster.apply(obj)
        self.cluster.apply(manifest)
        return manifest

    def _watch(self, manifest: Manifest, job: Job, cancel: threading.Event) -> Outcome:
        namespace = manifest["metadata"]["namespace"]
        name = manifest["metadata"]["name"]
        deadline = time.monotonic() + job.timeout + 30 if job.timeout else None
        pod: Manifest | None = None
        try:
            while True:
                if cancel.wait(self.poll_seconds):
                    return Outcome(kind=OutcomeKind.CANCELLED, error_message="cancelled")
                pods = self.cluster.pods(namespace, f"job-name={name}")
                pod = pods[-1] if pods else None
                if pod is not None:
                    pod_name = pod["metadata"]["name"]
                    events = self.cluster.events(namespace, pod_name)
                    outcome = pod_outcome(pod, events, datetime.now(UTC), self.pending_timeout)
                    if outcome is not None:
                        return outcome
                state = job_state(self.cluster.get("batch/v1", "Job", namespace, name) or {})
                if state.timed_out or (deadline is not None and time.monotonic() > deadline):
                    return Outcome(
                        kind=OutcomeKind.TIMED_OUT,
                        error_message=state.message or f"exceeded its {job.timeout} s timeout",
                    )
                if state.finished and pod is None:
                    return Outcome(
                        kind=OutcomeKind.CRASHED,
                        error_type=f"kubernetes.{state.reason or 'JobFailed'}",
                        error_message=state.message or "the job ended without a pod",
                    )
        finally:
            self._keep_log(namespace, pod, job)
            self.cluster.delete("batch/v1", "Job", namespace, name)

    def _keep_log(self, namespace: str, pod: Manifest | None, job: Job) -> None:
        if pod is None or job.log_path is None:
            return
        try:
            text = self.cluster.log(namespace, pod["metadata"]["name"], TASK_CONTAINER)
        except Exception as exc:  # a pod that never started has no log
            text = f"(no log from pod {pod['metadata']['name']}: {exc})\n"
        with open(job.log_path, "a") as handle:
            handle.write(text)


def _portable(job: Job) -> Job:
    """``job`` with the files it imports named relative to the working folder, where
    the image holds the project's code."""
    here = os.getcwd()
    paths = tuple(
        os.path.relpath(path, here) if os.path.isabs(path) and path.startswith(here) else path
        for path in job.import_path
    )
    request = job.kwargs.get("request")
    kwargs = job.kwargs
    if isinstance(request, dict) and "import_path" in request:
        kwargs = {**job.kwargs, "request": {**request, "import_path": list(paths)}}
    return replace(job, import_path=paths, kwargs=kwargs)


class KubeCluster:
    """:class:`Cluster` on the official client.

    Args:
        api_client: A configured ``kubernetes.client.ApiClient``.
        dry_run: Applies are checked by the API server (schemas, admission) and not
            stored: ``dryRun=All``.
    """

    def __init__(self, api_client: Any, *, dry_run: bool = False) -> None:
        from kubernetes import client, dynamic

        self._dry_run = {"dry_run": "All"} if dry_run else {}
        self._api = api_client
        self._core = client.CoreV1Api(api_client)
        self._dynamic = dynamic.DynamicClient(api_client)  # type: ignore[no-untyped-call]

    @classmethod
    def from_environment(cls, *, dry_run: bool = False) -> KubeCluster:
        try:
            from kubernetes import client, config
        except ImportError as exc:
            raise InvalidInputError(
                "the kubernetes runtime needs 'modelyard[k8s]'", code="runtime/unavailable"
            ) from exc
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        return cls(client.ApiClient(), dry_run=dry_run)

    def _resource(self, api_version: str, kind: str) -> Any:
        return self._dynamic.resources.get(api_version=api_version, kind=kind)

    def serves(self, api_version: str, kind: str) -> bool:
        """Whether the cluster knows the kind (a custom resource needs its operator)."""
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            self._resource(api_version, kind)
        except ResourceNotFoundError:
            return False
        return True

    def apply(self, obj: Manifest) -> None:
        self._dynamic.server_side_apply(  # type: ignore[no-untyped-call]
            self._resource(obj["apiVersion"], obj["kind"]),
            body=obj,
            namespace=obj["metadata"].get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
            **self._dry_run,
        )

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest | None:
        from kubernetes.client.exceptions import ApiException

        try:
            found = self._resource(api_version, kind).get(name=name, namespace=namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        result: Manifest = found.to_dict()
        return result

    def objects(self, api_version: str, kind: str, namespace: str, selector: str) -> list[Manifest]:
        found = self._resource(api_version, kind).get(namespace=namespace, label_selector=selector)
        items: list[Manifest] = [item.to_dict() for item in found.items]
        return items

    def pods(self, namespace: str, selector: str) -> list[Manifest]:
        listed = self._core.list_namespaced_pod(namespace, label_selector=selector)
        pods: list[Manifest] = self._api.sanitize_for_serialization(listed.items)
        return sorted(pods, key=lambda pod: pod["metadata"].get("creationTimestamp", ""))

    def events(self, namespace: str, involved: str) -> list[Manifest]:
        listed = self._core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={involved}"
        )
        events: list[Manifest] = self._api.sanitize_for_serialization(listed.items)
        return events

    def log(self, namespace: str, pod: str, container: str) -> str:
        text: str = self._core.read_namespaced_pod_log(pod, namespace, container=container)
        return text

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self._resource(api_version, kind).delete(
                name=name, namespace=namespace, propagation_policy="Background"
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
