"""How task values travel: stored as artifacts by the worker that made them, passed on
by reference, loaded by the worker that needs them. The engine only sees references.

A resolved input is one of ``{"value": <json>}``, ``{"ref": <ArtifactRef>}`` or
``{"items": [<resolved input>, ...]}`` (the outputs of a mapped task, in order) or
``{"dict": {<key>: <resolved input>}}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelyard.artifacts import ArtifactRef, ArtifactStore
from modelyard.pipelines.errors import PipelineDefinitionError

TABLE_TYPES = ("Table", "RecordBatch", "RecordBatchReader", "DataFrame", "DuckDBPyRelation")


def store_output(store: ArtifactStore, value: Any, task: str) -> ArtifactRef:
    """Store what a task returned, choosing the artifact kind from its type.

    Raises:
        PipelineDefinitionError: the type cannot be stored; the message names the task.
    """
    if type(value).__name__ in TABLE_TYPES:
        return store.put_table(value)
    if isinstance(value, Path):
        return store.put_directory(value) if value.is_dir() else store.put_file(value)
    if isinstance(value, bytes | bytearray):
        return store.put_bytes(bytes(value))
    try:
        return store.put_json(value)
    except Exception as exc:
        raise PipelineDefinitionError(
            f"task {task!r} returned a {type(value).__module__}.{type(value).__qualname__}, "
            "which cannot be stored: return a table (pyarrow, pandas or DuckDB), a JSON "
            "value, bytes or a pathlib.Path",
            code="pipeline/unsupported_output",
            details={"task": task, "type": type(value).__qualname__},
        ) from exc


def load_input(store: ArtifactStore, resolved: dict[str, Any]) -> Any:
    """The Python value of a resolved input (tables as ``pyarrow.Table``)."""
    if "value" in resolved:
        return resolved["value"]
    if "items" in resolved:
        return [load_input(store, item) for item in resolved["items"]]
    if "dict" in resolved:
        return {key: load_input(store, item) for key, item in resolved["dict"].items()}
    ref = ArtifactRef.model_validate(resolved["ref"])
    if ref.kind == "json":
        return store.get_json(ref)
    if ref.kind == "table":
        return store.read_table(ref)
    if ref.kind == "file":
        return store.get_bytes(ref)
    return store.manifest(ref)


def digests_in(resolved: dict[str, Any]) -> list[str]:
    """Every artifact a resolved input reads (for lineage and cache keys)."""
    if "ref" in resolved:
        return [str(resolved["ref"]["digest"])]
    if "items" in resolved:
        return [d for item in resolved["items"] for d in digests_in(item)]
    if "dict" in resolved:
        return [d for item in resolved["dict"].values() for d in digests_in(item)]
    return []
