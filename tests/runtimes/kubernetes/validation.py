"""Validation of rendered objects: built-in kinds against the OpenAPI schema of a pinned
Kubernetes version (``kubernetes-validate``), custom resources against the CRD schema of
their pinned upstream version kept in ``crds/`` (see ``crds/SOURCES.md``).

Embedded core/v1 PodTemplateSpecs of custom resources (listed per kind in
``crds/pod_templates.json``) are also validated against Kubernetes' own PodTemplateSpec,
whether or not the stored CRD schema prunes them."""

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
POD_TEMPLATES = CRDS / "pod_templates.json"


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
        if path.name.startswith(("SOURCES", ".")) or path == POD_TEMPLATES:
            continue
        for crd in _read(path):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = _strict(version["schema"]["openAPIV3Schema"], top=True)
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def _strict(node: Any, top: bool = False) -> Any:
    """The schema as the API server applies it with ``fieldValidation=Strict`` (kubectl's
    default): a field the schema does not name is an error, not silently pruned, except
    where the schema keeps unknown fields, in ``metadata`` (ObjectMeta's own schema) and
    in ``status``, which the operator writes (and a newer operator writes more of)."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    result = {key: _strict(value) for key, value in node.items() if key != "properties"}
    if "properties" in node:
        result["properties"] = {
            key: (value if top and key in ("metadata", "status") else _strict(value))
            for key, value in node["properties"].items()
        }
        if "additionalProperties" not in node and not node.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            result["additionalProperties"] = False
    return result


@cache
def pod_template_paths() -> dict[str, list[str]]:
    """``group/version/Kind`` -> dotted paths of embedded PodTemplateSpecs; ``name[]`` walks
    every item of a list, ``*`` every value of a map."""
    loaded: dict[str, list[str]] = json.loads(POD_TEMPLATES.read_text())
    return loaded


def _find(node: Any, steps: list[str], where: str) -> Iterable[tuple[str, Any]]:
    if not steps:
        yield where, node
        return
    step, rest = steps[0], steps[1:]
    if step == "*":
        if isinstance(node, dict):
            for key, value in node.items():
                yield from _find(value, rest, f"{where}.{key}")
        return
    name, is_list = step.removesuffix("[]"), step.endswith("[]")
    if not isinstance(node, dict) or name not in node:
        return
    child, where = node[name], f"{where}.{name}" if where else name
    if not is_list:
        yield from _find(child, rest, where)
    elif isinstance(child, list):
        for i, item in enumerate(child):
            yield from _find(item, rest, f"{where}[{i}]")


def pod_templates(obj: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(path, template)`` for every embedded PodTemplateSpec present in ``obj``."""
    key = f"{obj.get('apiVersion')}/{obj.get('kind')}"
    return [
        found
        for path in pod_template_paths().get(key, [])
        for found in _find(obj, path.split("."), "")
    ]


def _validate_builtin(obj: dict[str, Any], label: str) -> None:
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        raise InvalidObject(
            f"{label}: not a Kubernetes {KUBERNETES_VERSION} kind and no CRD in {CRDS}"
        ) from None
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        raise InvalidObject(f"{label}: {path}: {exc.message}") from None


def validate(obj: dict[str, Any]) -> None:
    """Raises InvalidObject naming the object and the first problem found."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    label = f"{kind} {obj.get('metadata', {}).get('name')!r} ({api_version})"
    schema = crd_schemas().get((str(api_version), str(kind)))
    if schema is None:
        _validate_builtin(obj, label)
        return
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(obj), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        path = ".".join(str(p) for p in first.path)
        raise InvalidObject(f"{label}: {path}: {first.message}")
    for where, template in pod_templates(obj):
        wrapped = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "t"},
            "template": template,
        }
        _validate_builtin(wrapped, f"{label}: {where} (as a PodTemplateSpec)")


def validate_all(objects: Iterable[dict[str, Any]]) -> int:
    """Validate every object; returns how many there were."""
    count = 0
    for obj in objects:
        validate(obj)
        count += 1
    return count
