"""Graph checks and walks over a ``PipelineSpec``."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

from modelyard.pipelines.errors import PipelineDefinitionError
from modelyard.specs.pipelines import (
    CollectionInput,
    Input,
    NodeSpec,
    OutputInput,
    ParamInput,
    PipelineSpec,
)


def input_nodes(value: Input) -> Iterator[str]:
    """The nodes an input reads from."""
    if isinstance(value, OutputInput):
        yield value.node
    elif isinstance(value, CollectionInput):
        for item in value.items.values():
            yield from input_nodes(item)


def input_params(value: Input) -> Iterator[str]:
    if isinstance(value, ParamInput):
        yield value.name
    elif isinstance(value, CollectionInput):
        for item in value.items.values():
            yield from input_params(item)


def upstream_of(node: NodeSpec) -> set[str]:
    """Every node ``node`` waits for: data inputs, conditions and ``after`` edges."""
    found = set(node.after)
    for value in node.inputs.values():
        found.update(input_nodes(value))
    for condition in node.conditions:
        found.update(input_nodes(condition.value))
    return found


def topological_order(spec: PipelineSpec) -> list[NodeSpec]:
    """Nodes ordered so each comes after everything it waits for.

    Raises:
        PipelineDefinitionError: a node waits for an unknown node, or the graph has a cycle.
    """
    by_id = {node.id: node for node in spec.nodes}
    if len(by_id) != len(spec.nodes):
        raise PipelineDefinitionError(
            f"pipeline {spec.name!r} has two nodes with the same id",
            details={"pipeline": spec.name},
        )
    waits = {node.id: upstream_of(node) for node in spec.nodes}
    for node_id, upstream in waits.items():
        unknown = upstream - by_id.keys()
        if unknown:
            raise PipelineDefinitionError(
                f"pipeline {spec.name!r}: task {node_id!r} depends on unknown task(s) "
                f"{sorted(unknown)}",
                details={"pipeline": spec.name, "task": node_id},
            )
    dependents: dict[str, list[str]] = {node_id: [] for node_id in by_id}
    for node_id, upstream in waits.items():
        for parent in upstream:
            dependents[parent].append(node_id)
    remaining = {node_id: len(upstream) for node_id, upstream in waits.items()}
    ready = deque(node.id for node in spec.nodes if remaining[node.id] == 0)
    order: list[NodeSpec] = []
    while ready:
        node_id = ready.popleft()
        order.append(by_id[node_id])
        for child in dependents[node_id]:
            remaining[child] -= 1
            if remaining[child] == 0:
                ready.append(child)
    if len(order) != len(spec.nodes):
        cycle = sorted(node_id for node_id, count in remaining.items() if count > 0)
        raise PipelineDefinitionError(
            f"pipeline {spec.name!r} has a cycle among tasks {cycle}",
            details={"pipeline": spec.name, "tasks": cycle},
        )
    return order


def downstream_of(spec: PipelineSpec, roots: Iterable[str]) -> set[str]:
    """``roots`` and every node that (transitively) waits for one of them."""
    dependents: dict[str, set[str]] = {node.id: set() for node in spec.nodes}
    for node in spec.nodes:
        for parent in upstream_of(node):
            dependents.setdefault(parent, set()).add(node.id)
    found: set[str] = set()
    stack = list(roots)
    while stack:
        node_id = stack.pop()
        if node_id not in found:
            found.add(node_id)
            stack.extend(dependents.get(node_id, ()))
    return found


def validate(spec: PipelineSpec) -> None:
    """Check references, acyclicity and parameter names of a spec from any source."""
    topological_order(spec)
    known_params = set(spec.params_schema.get("properties", {}))
    for node in spec.nodes:
        values = [*node.inputs.values(), *(c.value for c in node.conditions)]
        for value in values:
            unknown = set(input_params(value)) - known_params
            if unknown:
                raise PipelineDefinitionError(
                    f"pipeline {spec.name!r}: task {node.id!r} reads unknown parameter(s) "
                    f"{sorted(unknown)}",
                    details={"pipeline": spec.name, "task": node.id},
                )
        if node.map_over is not None and node.map_over not in node.inputs:
            raise PipelineDefinitionError(
                f"pipeline {spec.name!r}: task {node.id!r} maps over {node.map_over!r}, "
                "which it is not given",
                details={"pipeline": spec.name, "task": node.id},
            )
