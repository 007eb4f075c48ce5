"""Validation of rendered objects: built-in kinds against the OpenAPI schema of a pinned
Kubernetes version (``kubernetes-validate``), custom resources against the CRD schema of
their pinned upstream version kept in ``crds/`` (see ``crds/SOURCES.md``)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.33.0"
CRDS = Path(__file__).parent / "crds"


class InvalidObject(AssertionError):
    pass


def _read(path: Path) -> list[dict[str, Any]]:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    name = path.name.removesuffix(".gz")
    if name.endswith(".json"):
        loaded = json.loads(raw)
        return loaded if isinstance(loaded, list) else [loaded]
    return [doc for doc in yaml.safe_load_all(raw) if doc]


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """``(apiVersion, kind)`` -> the openAPIV3Schema of every CRD in ``crds/``."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRDS.iterdir()):
        if path.name.startswith(("SOURCES", ".")):
            continue
        for crd in _read(path):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = version["schema"]["openAPIV3Schema"]
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def validate(obj: dict[str, Any]) -> None:
    """Raises InvalidObject naming the object and the first problem found."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    label = f"{kind} {obj.get('metadata', {}).get('name')!r} ({api_version})"
    schema = crd_schemas().get((str(api_version), str(kind)))
    if schema is not None:
        errors = sorted(
            jsonschema.Draft7Validator(schema).iter_errors(obj), key=lambda e: list(e.path)
        )
        if errors:
            first = errors[0]
            path = ".".join(str(p) for p in first.path)
            raise InvalidObject(f"{label}: {path}: {first.message}")
        return
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        raise InvalidObject(
            f"{label}: not a Kubernetes {KUBERNETES_VERSION} kind and no CRD in {CRDS}"
        ) from None
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        raise InvalidObject(f"{label}: {path}: {exc.message}") from None


def validate_all(objects: Iterable[dict[str, Any]]) -> int:
    """Validate every object; returns how many there were."""
    count = 0
    for obj in objects:
        validate(obj)
        count += 1
    return count
