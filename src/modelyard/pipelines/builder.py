"""Building a pipeline's graph: running its body with placeholders instead of values.

The body runs once, at definition time. Task calls record nodes; their results are
``TaskOutput`` placeholders; the pipeline's parameters are ``ParamRef`` placeholders.
Anything that would need a real value while building (``if output:``, ``for x in
output``, ``f"{param}"``) raises a ``PipelineDefinitionError`` that says what to do
instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NoReturn

from modelyard.pipelines.errors import PipelineDefinitionError
from modelyard.specs.pipelines import (
    CollectionInput,
    Condition,
    Input,
    LiteralInput,
    NodeSpec,
    OutputInput,
    ParamInput,
)

if TYPE_CHECKING:
    from modelyard.pipelines.task import TaskDefinition

_builder: ContextVar[GraphBuilder | None] = ContextVar("modelyard_graph_builder", default=None)


def current_builder() -> GraphBuilder | None:
    return _builder.get()


class _Placeholder:
    """Refuses every use that would need a value the graph only has at run time."""

    def _describe(self) -> str:
        raise NotImplementedError

    def _refuse(self, what: str, instead: str) -> NoReturn:
        raise PipelineDefinitionError(
            f"{self._describe()} has no value while the pipeline is being defined, so it "
            f"cannot be used in {what}; {instead}",
        )

    def __bool__(self) -> bool:
        self._refuse("a condition", "use `with when(value): ...` to run tasks conditionally")

    def __iter__(self) -> Iterator[Any]:
        self._refuse("a loop", "use `task.map(value)` to run a task once per item")

    def __str__(self) -> str:
        self._refuse("a string", "pass it to a task and format it there")

    def __format__(self, spec: str) -> str:
        self._refuse("a string", "pass it to a task and format it there")

    def __getitem__(self, key: object) -> Any:
        self._refuse("indexing", "pass it to a task and index it there")

    def __len__(self) -> int:
        self._refuse("len()", "pass it to a task")


class TaskOutput(_Placeholder):
    """The future output of a node (for a mapped node: the list of its outputs)."""

    def __init__(self, node_id: str, pipeline: str) -> None:
        self.node_id = node_id
        self.pipeline = pipeline

    def _describe(self) -> str:
        return f"the output of task {self.node_id!r} (pipeline {self.pipeline!r})"

    def __repr__(self) -> str:
        return f"<output of {self.node_id}>"


class ParamRef(_Placeholder):
    """A pipeline parameter, known only when a run starts."""

    def __init__(self, name: str, pipeline: str) -> None:
        self.name = name
        self.pipeline = pipeline

    def _describe(self) -> str:
        return f"parameter {self.name!r} of pipeline {self.pipeline!r}"

    def __repr__(self) -> str:
        return f"<param {self.name}>"


class GraphBuilder:
    """Collects the nodes of one pipeline while its body runs."""

    def __init__(self, pipeline: str) -> None:
        self.pipeline = pipeline
        self.nodes: list[NodeSpec] = []
        self._conditions: list[Condition] = []

    @contextmanager
    def active(self) -> Iterator[GraphBuilder]:
        token = _builder.set(self)
        try:
            yield self
        finally:
            _builder.reset(token)

    @contextmanager
    def condition(self, condition: Condition) -> Iterator[None]:
        self._conditions.append(condition)
        try:
            yield
        finally:
            self._conditions.pop()

    def add_call(
        self,
        task: TaskDefinition[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        after: Iterable[Any] = (),
        mapped: bool = False,
    ) -> TaskOutput:
        node_id = self._unique_id(task.name)
        where = f"task {task.name!r} in pipeline {self.pipeline!r}"
        try:
            bound = task.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise PipelineDefinitionError(
                f"{where}: {exc}", details={"pipeline": self.pipeline, "task": task.name}
            ) from exc
        inputs = {
            name: self.to_input(value, f"{where}, argument {name!r}")
            for name, value in bound.arguments.items()
        }
        map_over = next(iter(task.signature.parameters)) if mapped else None
        upstream = []
        for item in after if isinstance(after, list | tuple) else [after]:
            if not isinstance(item, TaskOutput):
                raise PipelineDefinitionError(
                    f"{where}: after= takes task outputs, not {type(item).__name__}",
                    details={"pipeline": self.pipeline, "task": task.name},
                )
            upstream.append(item.node_id)
        self.nodes.append(
            NodeSpec(
                id=node_id,
                task=task.ref,
                task_name=task.name,
                options=task.options,
                inputs=inputs,
                after=tuple(upstream),
                conditions=tuple(self._conditions),
                map_over=map_over,
            )
        )
        return TaskOutput(node_id, self.pipeline)

    def to_input(self, value: Any, where: str) -> Input:
        """The spec form of an argument: an output, a parameter or a JSON literal."""
        if isinstance(value, TaskOutput):
            return OutputInput(node=value.node_id)
        if isinstance(value, ParamRef):
            return ParamInput(name=value.name)
        if isinstance(value, list | tuple | dict) and _holds_placeholders(value):
            if isinstance(value, dict):
                items = {str(k): self.to_input(v, where) for k, v in value.items()}
                return CollectionInput(shape="dict", items=items)
            items = {str(i): self.to_input(v, where) for i, v in enumerate(value)}
            return CollectionInput(shape="list", items=items)
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise PipelineDefinitionError(
                f"{where}: a constant of type {type(value).__name__} cannot be stored in the "
                "pipeline's definition (only JSON values can); produce it in a task instead",
                details={"pipeline": self.pipeline},
            ) from exc
        return LiteralInput(value=value)

    def _unique_id(self, name: str) -> str:
        taken = {node.id for node in self.nodes}
        if name not in taken:
            return name
        suffix = 2
        while f"{name}-{suffix}" in taken:
            suffix += 1
        return f"{name}-{suffix}"


def _holds_placeholders(value: Any) -> bool:
    if isinstance(value, _Placeholder):
        return True
    if isinstance(value, dict):
        return any(_holds_placeholders(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_placeholders(v) for v in value)
    return False


_TRUTHY = object()


@contextmanager
def when(value: Any, equals: Any = _TRUTHY) -> Iterator[None]:
    """Run the tasks called inside the block only if ``value`` is truthy (or equals
    ``equals``) when the run gets there; otherwise they, and what depends on them, are
    skipped.
    """
    builder = current_builder()
    if builder is None:
        raise PipelineDefinitionError("when() is for use inside a @pipeline body")
    condition_input = builder.to_input(value, "when()")
    if equals is _TRUTHY:
        condition = Condition(value=condition_input)
    else:
        condition = Condition(value=condition_input, equals=equals, truthy=False)
    with builder.condition(condition):
        yield
