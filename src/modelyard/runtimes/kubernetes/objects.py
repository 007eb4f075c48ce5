"""Kubernetes objects as plain dicts: names, labels, containers, YAML.

Objects are what server-side apply takes and what ``modelyard render`` prints; the tests
validate every one against the Kubernetes OpenAPI schema of a pinned version and custom
resources against their upstream CRD schemas.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from modelyard.specs.resources import Resources

Manifest = dict[str, Any]

PART_OF = "modelyard"
LABEL_PREFIX = "modelyard.io/"
FIELD_MANAGER = "modelyard"
MAX_NAME = 63  # a DNS-1123 label: Services, namespaces, and Jobs (their pods' labels)

_INVALID = re.compile(r"[^a-z0-9-]+")
_LABEL_INVALID = re.compile(r"[^A-Za-z0-9_.-]+")


def name(*parts: str, limit: int = MAX_NAME) -> str:
    """A DNS-1123 label made of ``parts``: lower case, ``-`` between parts, and when too
    long, cut and ended with a hash of the whole so that distinct inputs stay distinct."""
    joined = "-".join(_INVALID.sub("-", part.lower()).strip("-") for part in parts if part)
    joined = re.sub(r"-{2,}", "-", joined).strip("-") or "x"
    if len(joined) <= limit:
        return joined
    digest = hashlib.sha256(joined.encode()).hexdigest()[:8]
    return f"{joined[: limit - 9].rstrip('-')}-{digest}"


def label_value(value: str) -> str:
    """``value`` as a label value: at most 63 characters of ``[A-Za-z0-9_.-]``, starting
    and ending alphanumeric (a hash keeps long values distinct)."""
    cleaned = _LABEL_INVALID.sub("_", value).strip("_.-")
    if len(cleaned) > MAX_NAME:
        digest = hashlib.sha256(value.encode()).hexdigest()[:8]
        cleaned = f"{cleaned[: MAX_NAME - 9].rstrip('_.-')}-{digest}"
    return cleaned


def labels(component: str, **extra: str | None) -> dict[str, str]:
    """The labels of every modelyard object: who made it, which part it is, and
    ``modelyard.io/<key>`` for each given ``extra`` (``project``, ``run``, ...)."""
    result = {
        "app.kubernetes.io/name": PART_OF,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": PART_OF,
    }
    for key, value in extra.items():
        if value is not None:
            result[LABEL_PREFIX + key.replace("_", "-")] = label_value(value)
    return result


def metadata(
    object_name: str,
    namespace: str | None,
    object_labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
) -> Manifest:
    result: Manifest = {"name": object_name}
    if namespace is not None:
        result["namespace"] = namespace
    result["labels"] = dict(object_labels)
    if annotations:
        result["annotations"] = dict(annotations)
    return result


def env_list(env: Mapping[str, str]) -> list[Manifest]:
    """Environment variables in a stable order (so rendered objects are reproducible)."""
    return [{"name": key, "value": env[key]} for key in sorted(env)]


def secret_env(secret: str, keys: Iterable[str]) -> list[Manifest]:
    """Variables taken from a Kubernetes Secret, one per key, named as the key."""
    return [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for key in sorted(keys)
    ]


def quantity_cpu(cores: float) -> str:
    millicores = round(cores * 1000)
    return str(millicores // 1000) if millicores % 1000 == 0 else f"{millicores}m"


def quantity_memory(size: int) -> str:
    for unit, factor in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


GPU_RESOURCE = "nvidia.com/gpu"


def quantities(resources: Resources) -> dict[str, str]:
    """``resources`` as Kubernetes quantities by resource name; what is None (or no
    GPUs) is left out."""
    result: dict[str, str] = {}
    if resources.cpu is not None:
        result["cpu"] = quantity_cpu(resources.cpu)
    if resources.memory is not None:
        result["memory"] = quantity_memory(resources.memory)
    if resources.gpu:
        result[GPU_RESOURCE] = str(resources.gpu)
    return result


def resource_requirements(resources: Resources, default: Resources | None = None) -> Manifest:
    """Requests and limits of a container: CPU requested (not limited: a CPU limit only
    throttles), memory requested and limited alike (the limit is what the OOM killer
    enforces), GPUs as ``nvidia.com/gpu`` limits (Kubernetes requires request = limit)."""
    fallback = default or Resources()
    cpu = resources.cpu or fallback.cpu
    memory = resources.memory or fallback.memory
    gpu = resources.gpu or fallback.gpu
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if cpu:
        requests["cpu"] = quantity_cpu(cpu)
    if memory:
        requests["memory"] = limits["memory"] = quantity_memory(memory)
    if gpu:
        limits[GPU_RESOURCE] = str(gpu)
    result: Manifest = {}
    if requests:
        result["requests"] = requests
    if limits:
        result["limits"] = limits
    return result


class _Dumper(yaml.SafeDumper):
    """Writes shared dicts out in full: no ``&id001`` anchors in manifests."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(objects: Iterable[Manifest]) -> str:
    """Objects as one multi-document YAML stream, keys in the order they were built."""
    return "".join(
        "---\n" + yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
        for obj in objects
    )


def from_yaml(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]
