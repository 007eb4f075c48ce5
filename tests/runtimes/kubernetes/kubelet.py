"""A stand-in for a cluster with one node, for the Kubernetes runtime's tests.

It is the API server and kubelet of the runtime's :class:`Cluster` interface, no more:
every applied object is first validated against the pinned Kubernetes schema (as the
API server would), and a Job's pod runs for real as a local process, started from the
pod's own container ``command`` and ``env`` (Secrets resolved from ``secrets``), with
the termination message, exit code, logs and deadline a kubelet would report. Given the
address of a Ray, a RayJob's driver runs for real too, as KubeRay runs it on the head:
its ``entrypoint`` with the head container's variables, the ``runtimeEnvYAML``'s and
``RAY_ADDRESS``; its end is the RayJob's status. What it
does not do (scheduling, images, OOM kills, eviction) is covered by the recorded pod
payloads in ``payloads/``.
"""

from __future__ import annotations

import itertools
import os
import shlex
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from tests.runtimes.kubernetes.validation import validate

Manifest = dict[str, Any]
_SUFFIX = itertools.count(10000)


@dataclass
class _Pod:
    name: str
    job: str
    namespace: str
    spec: Manifest
    labels: dict[str, str]
    created: str
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    waiting: tuple[str, str] | None = None  # (reason, message) of a container that cannot start
    deadline_exceeded: bool = False
    deleted: bool = False
    env: dict[str, str] = field(default_factory=dict)


class LocalKubelet:
    """Objects in memory; Job pods as local processes in ``folder``."""

    def __init__(
        self,
        folder: Path,
        secrets: dict[tuple[str, str], str] | None = None,
        ray_address: str | None = None,
    ) -> None:
        self.folder = folder
        self.secrets = dict(secrets or {})
        self.ray_address = ray_address
        self.drivers: dict[str, subprocess.Popen[bytes]] = {}  # RayJob name -> its driver
        # Deployments whose pods are not available yet, and those past their progress
        # deadline (by name prefix); the others are available at once (no pods run).
        self.starting: set[str] = set()
        self.stuck: set[str] = set()
        # The status an operator would write on a custom resource, by object name, and
        # the pods it would have made for one (recorded payloads the test labels).
        self.statuses: dict[str, Manifest] = {}
        self.operator_pods: list[Manifest] = []
        self.objects_by_key: dict[tuple[str, str, str, str], Manifest] = {}
        self.applied: list[Manifest] = []
        self._pods: dict[str, _Pod] = {}
        self._lock = threading.Lock()

    # -- the API server ---------------------------------------------------------------

    def apply(self, obj: Manifest) -> None:
        validate(obj)
        meta = obj["metadata"]
        key = (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])
        with self._lock:
            self.applied.append(obj)
            new = key not in self.objects_by_key
            self.objects_by_key[key] = obj
        if obj["kind"] == "Job" and new:
            self._start(obj)
        if obj["kind"] == "RayJob" and new and self.ray_address is not None:
            self._start_driver(obj)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest | None:
        obj = self.objects_by_key.get((api_version, kind, namespace, name))
        if obj is None:
            return None
        if kind == "Job":
            return {**obj, "status": self._job_status(name)}
        if kind == "Deployment":
            return {**obj, "status": self._deployment_status(obj)}
        if name in self.statuses:
            return {**obj, "status": self.statuses[name]}
        if kind == "RayJob" and name in self.drivers:
            return {**obj, "status": _rayjob_status(self.drivers[name])}
        return obj

    def objects(self, api_version: str, kind: str, namespace: str, selector: str) -> list[Manifest]:
        key, _, value = selector.partition("=")
        return [
            obj
            for (version, obj_kind, obj_namespace, _), obj in list(self.objects_by_key.items())
            if (version, obj_kind, obj_namespace) == (api_version, kind, namespace)
            and obj["metadata"].get("labels", {}).get(key) == value
        ]

    def pods(self, namespace: str, selector: str) -> list[Manifest]:
        key, _, value = selector.partition("=")
        with self._lock:
            chosen = [p for p in self._pods.values() if p.namespace == namespace and not p.deleted]
            made = [p for p in self.operator_pods if p["metadata"]["namespace"] == namespace]
        return [self._pod_object(p) for p in chosen if p.labels.get(key) == value] + [
            pod for pod in made if pod["metadata"].get("labels", {}).get(key) == value
        ]

    def events(self, namespace: str, involved: str) -> list[Manifest]:
        return []

    def log(self, namespace: str, pod: str, container: str) -> str:
        path = self._pods[pod].folder / "log"
        return path.read_text() if path.exists() else ""

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.objects_by_key.pop((api_version, kind, namespace, name), None)
        self.statuses.pop(name, None)  # an object of that name made later starts afresh
        driver = self.drivers.get(name) if kind == "RayJob" else None
        if driver is not None and driver.poll() is None:  # the Ray cluster goes with it
            driver.kill()
            driver.wait()
        with self._lock:  # an operator's pods go with their owner
            self.operator_pods = [
                pod
                for pod in self.operator_pods
                if pod["metadata"]["namespace"] != namespace
                or name not in pod["metadata"].get("labels", {}).values()
            ]
        for pod in list(self._pods.values()):
            if pod.job == name and pod.namespace == namespace:
                pod.deleted = True
                if pod.process is not None and pod.process.poll() is None:
                    pod.process.kill()
                    pod.process.wait()

    # -- the kubelet --------------------------------------------------------------------

    def _start(self, job: Manifest) -> None:
        name = job["metadata"]["name"]
        template = job["spec"]["template"]
        pod_name = f"{name}-{next(_SUFFIX)}"
        folder = self.folder / pod_name
        folder.mkdir(parents=True)
        pod = _Pod(
            name=pod_name,
            job=name,
            namespace=job["metadata"]["namespace"],
            spec=template["spec"],
            labels={**template["metadata"].get("labels", {}), "job-name": name},
            created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            folder=folder,
        )
        with self._lock:
            self._pods[pod_name] = pod
        container = pod.spec["containers"][0]
        env, missing = self._environment(container, folder)
        if missing:
            pod.waiting = ("CreateContainerConfigError", missing)
            return
        pod.env = env
        command = list(container["command"])
        if command[0] == "python":  # the image's Python: this venv's
            command[0] = sys.executable
        elif command[0] == "modelyard":
            command[0] = str(Path(sys.executable).with_name("modelyard"))
        with (folder / "log").open("wb") as log:
            pod.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=os.getcwd()
            )
        deadline = job["spec"].get("activeDeadlineSeconds")
        if deadline:
            threading.Thread(target=self._enforce, args=(pod, deadline), daemon=True).start()

    def _environment(self, container: Manifest, folder: Path) -> tuple[dict[str, str], str]:
        """The container's variables, as the kubelet resolves them; the message of a
        missing Secret key, as the kubelet words it."""
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.folder),
            "PYTHONPATH": os.getcwd(),  # the image's working folder holds the code
            "MODELYARD_TERMINATION_LOG": str(folder / "termination-log"),
        }
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = item["value"]
                continue
            ref = item["valueFrom"]["secretKeyRef"]
            value = self.secrets.get((ref["name"], ref["key"]))
            if value is None:
                return env, f"couldn't find key {ref['key']} in Secret {ref['name']}"
            env[item["name"]] = value
        return env, ""

    def _enforce(self, pod: _Pod, seconds: int) -> None:
        assert pod.process is not None
        try:
            pod.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pod.deadline_exceeded = True
            pod.process.terminate()

    def _pod_object(self, pod: _Pod) -> Manifest:
        container = pod.spec["containers"][0]
        status: Manifest = {"phase": "Pending", "conditions": []}
        state: Manifest
        if pod.waiting is not None:
            state = {"waiting": {"reason": pod.waiting[0], "message": pod.waiting[1]}}
        elif pod.process is None or pod.process.poll() is None:
            status["phase"] = "Running"
            state = {"running": {"startedAt": pod.created}}
        else:
            code = pod.process.returncode
            code = 128 - code if code < 0 else code  # a signal, as a container reports it
            status["phase"] = "Succeeded" if code == 0 else "Failed"
            if pod.deadline_exceeded:
                status |= {
                    "reason": "DeadlineExceeded",
                    "message": "Pod was active on the node longer than the specified deadline",
                }
            message = self._termination_message(pod)
            state = {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": pod.created,
                    "finishedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    **({"message": message} if message else {}),
                }
            }
        status["containerStatuses"] = [
            {
                "name": container["name"],
                "image": container["image"],
                "ready": "running" in state,
                "restartCount": 0,
                "state": state,
            }
        ]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod.name,
                "namespace": pod.namespace,
                "labels": pod.labels,
                "creationTimestamp": pod.created,
            },
            "spec": pod.spec,
            "status": status,
        }

    def _termination_message(self, pod: _Pod) -> str:
        path = Path(pod.env.get("MODELYARD_TERMINATION_LOG", pod.folder / "termination-log"))
        if path.exists() and path.read_text():
            return path.read_text()[:4096]
        log = pod.folder / "log"  # terminationMessagePolicy: FallbackToLogsOnError
        return log.read_text()[-2048:] if log.exists() else ""

    def _deployment_status(self, obj: Manifest) -> Manifest:
        name = obj["metadata"]["name"]
        desired = obj["spec"].get("replicas", 1)
        if any(name.startswith(prefix) for prefix in self.stuck):
            return {
                "observedGeneration": 1,
                "replicas": desired,
                "conditions": [
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": f'ReplicaSet "{name}-7d9f" has timed out progressing.',
                    }
                ],
            }
        available = 0 if any(name.startswith(prefix) for prefix in self.starting) else desired
        return {
            "observedGeneration": 1,
            "replicas": desired,
            "updatedReplicas": desired,
            "availableReplicas": available,
            "conditions": [{"type": "Available", "status": "True" if available else "False"}],
        }

    def _job_status(self, name: str) -> Manifest:
        pods = [p for p in self._pods.values() if p.job == name]
        if not pods:
            return {}
        pod = pods[-1]
        if pod.deadline_exceeded:
            return {
                "failed": 1,
                "conditions": [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "DeadlineExceeded",
                        "message": "Job was active longer than specified deadline",
                    }
                ],
            }
        if pod.process is None or pod.process.poll() is None:
            return {"active": 1, "ready": 1 if pod.process is not None else 0}
        if pod.process.returncode == 0:
            return {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        return {
            "failed": 1,
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            ],
        }

    def _start_driver(self, rayjob: Manifest) -> None:
        spec, name = rayjob["spec"], rayjob["metadata"]["name"]
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.folder),
            "PYTHONPATH": os.getcwd(),
            "RAY_ADDRESS": str(self.ray_address),
            # The tests' Ray heads run without token authentication, as KubeRay's do
            # unless their authOptions ask for it.
            "RAY_AUTH_MODE": "disabled",
        }
        cluster = spec.get("rayClusterSpec")
        if cluster is not None:
            (head,) = cluster["headGroupSpec"]["template"]["spec"]["containers"]
            env.update(
                {item["name"]: item["value"] for item in head.get("env", []) if "value" in item}
            )
            for source in head.get("envFrom", []):
                secret = source["secretRef"]["name"]
                env.update(
                    {key: value for (owner, key), value in self.secrets.items() if owner == secret}
                )
        env.update(yaml.safe_load(spec["runtimeEnvYAML"]).get("env_vars", {}))
        command = shlex.split(spec["entrypoint"])
        if command[0] == "modelyard":
            command[0] = str(Path(sys.executable).with_name("modelyard"))
        folder = self.folder / name
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "log").open("wb") as log:
            self.drivers[name] = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=os.getcwd()
            )

    def close(self) -> None:
        """Stop every pod process still running, and reap them all."""
        for driver in self.drivers.values():
            if driver.poll() is None:
                driver.kill()
            driver.wait()
        for pod in self._pods.values():
            if pod.process is not None:
                if pod.process.poll() is None:
                    pod.process.kill()
                pod.process.wait()


def _rayjob_status(driver: subprocess.Popen[bytes]) -> Manifest:
    """What KubeRay reports of a RayJob whose driver is ``driver``."""
    code = driver.poll()
    if code is None:
        return {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}
    return {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED" if code == 0 else "FAILED"}
