"""What a task receives: its inputs resolved from literals, parameters and upstream
outputs, as the JSON the worker decodes (values inline, artifacts by reference).

The engine reads an artifact's content only where it must decide something itself: a
condition's value and the list a mapped task runs over, both small JSON values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelyard.artifacts import ArtifactRef, ArtifactStore
from modelyard.pipelines.errors import PipelineDefinitionError
from modelyard.pipelines.runs import PARENT
from modelyard.specs.pipelines import (
    CollectionInput,
    Condition,
    Input,
    LiteralInput,
    NodeSpec,
    OutputInput,
    ParamInput,
)
from modelyard.store.models import TaskRun

TaskRuns = Mapping[tuple[str, int], TaskRun]


class InputResolver:
    """Resolves a node's inputs against the task runs of its run."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def inputs(
        self, node: NodeSpec, runs: TaskRuns, params: dict[str, Any]
    ) -> dict[str, dict[str, Any]]:
        return {name: self.resolve(value, runs, params) for name, value in node.inputs.items()}

    def resolve(self, value: Input, runs: TaskRuns, params: dict[str, Any]) -> dict[str, Any]:
        if isinstance(value, LiteralInput):
            return {"value": value.value}
        if isinstance(value, ParamInput):
            return {"value": params.get(value.name)}
        if isinstance(value, OutputInput):
            output = runs[(value.node, PARENT)].output
            if output is None:
                raise PipelineDefinitionError(f"task {value.node!r} has no output")
            return dict(output)
        if isinstance(value, CollectionInput):
            resolved = {k: self.resolve(v, runs, params) for k, v in value.items.items()}
            if value.shape == "list":
                return {"items": list(resolved.values())}
            return {"dict": resolved}
        raise TypeError(f"unknown input {value!r}")

    def holds(self, condition: Condition, runs: TaskRuns, params: dict[str, Any]) -> bool:
        value = self.value(self.resolve(condition.value, runs, params))
        return bool(value) if condition.truthy else bool(value == condition.equals)

    def value(self, resolved: dict[str, Any]) -> Any:
        """The JSON value behind a resolved input (read from the store if need be).

        Raises:
            PipelineDefinitionError: the input is a table, a file or a folder.
        """
        if "value" in resolved:
            return resolved["value"]
        if "ref" in resolved and resolved["ref"]["kind"] == "json":
            return self.store.get_json(ArtifactRef.model_validate(resolved["ref"]))
        raise PipelineDefinitionError(
            "conditions and mapped lists must be JSON values (a table cannot be one)"
        )

    def map_items(self, over: dict[str, Any]) -> list[dict[str, Any]]:
        """The resolved inputs of a mapped task's items, one per element of its list.

        Raises:
            PipelineDefinitionError: what it maps over is not a list.
        """
        if "items" in over:
            return list(over["items"])
        values = self.value(over)
        if not isinstance(values, list):
            raise PipelineDefinitionError(
                f"a mapped task needs a list to map over, not a {type(values).__name__}"
            )
        return [{"value": value} for value in values]
