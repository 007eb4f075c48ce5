"""The serialisable form of a pipeline: what every runtime receives, laptop to cluster."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from modelyard.specs.common import Spec
from modelyard.specs.resources import Resources

NodeId = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")]


class RetryPolicy(Spec):
    """When and how often a failed attempt is tried again.

    Backoff is exponential with full jitter: attempt ``n`` (from 1) waits a random time
    in ``[0, min(max_delay, delay * factor ** (n - 1))]``.

    Args:
        retries: Extra attempts after the first (0: never retry).
        delay: Base delay before the first retry.
        factor: Growth of the delay per retry.
        max_delay: Upper bound of any one delay.
        on_exceptions: Retry only when the task raised one of these (qualified class
            names, e.g. ``"ConnectionError"`` or ``"requests.exceptions.Timeout"``);
            empty means any exception.
        on_exit_codes: Retry when the worker process died with one of these exit codes
            (e.g. 137 for an out-of-memory kill); empty means any crash.
    """

    retries: int = Field(default=0, ge=0, le=100)
    delay: timedelta = timedelta(seconds=1)
    factor: float = Field(default=2.0, ge=1.0)
    max_delay: timedelta = timedelta(minutes=5)
    on_exceptions: tuple[str, ...] = ()
    on_exit_codes: tuple[int, ...] = ()


class Environment(Spec):
    """What a remote runtime needs to import a task: extra requirements or an image."""

    requirements: tuple[str, ...] = ()
    image: str | None = None


class TaskOptions(Spec):
    retry: RetryPolicy = RetryPolicy()
    timeout: timedelta | None = None
    resources: Resources = Resources()
    pool: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    pool_slots: int = Field(default=1, ge=1)
    cache: bool = True
    secrets: tuple[str, ...] = ()
    env: Environment = Environment()
    track: bool = False

    @field_validator("timeout")
    @classmethod
    def _positive_timeout(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("timeout must be positive")
        return value


class LiteralInput(Spec):
    kind: Literal["literal"] = "literal"
    value: Any


class ParamInput(Spec):
    kind: Literal["param"] = "param"
    name: str


class OutputInput(Spec):
    kind: Literal["output"] = "output"
    node: NodeId


class CollectionInput(Spec):
    """A list or dict literal some of whose items are outputs or parameters."""

    kind: Literal["collection"] = "collection"
    shape: Literal["list", "dict"]
    items: dict[str, Input]


Input = Annotated[
    LiteralInput | ParamInput | OutputInput | CollectionInput, Field(discriminator="kind")
]
CollectionInput.model_rebuild()


class Condition(Spec):
    """Run the node only if ``value`` equals ``equals`` (or, without it, is truthy)."""

    value: Input
    equals: Any = None
    truthy: bool = True


class NodeSpec(Spec):
    """One task call in the graph.

    ``map_over`` names the argument that receives one item of a list at a time: the
    node then runs once per item and its output is the list of their outputs.
    """

    id: NodeId
    task: str = Field(description="The task function, as 'module:qualname'.")
    task_name: str
    options: TaskOptions
    inputs: dict[str, Input]
    after: tuple[NodeId, ...] = ()
    conditions: tuple[Condition, ...] = ()
    map_over: str | None = None


class PipelineSpec(Spec):
    name: str
    source: str = Field(description="Where the pipeline was loaded from: 'file.py:name'.")
    params_schema: dict[str, Any]
    nodes: tuple[NodeSpec, ...]
