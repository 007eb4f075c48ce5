"""The ``@task`` decorator: an inert, typed definition of one step."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, Generic, ParamSpec, TypeVar, cast, overload

from modelyard.pipelines.errors import PipelineDefinitionError
from modelyard.specs.pipelines import Environment, RetryPolicy, TaskOptions
from modelyard.specs.resources import Resources

P = ParamSpec("P")
R = TypeVar("R")

RESERVED_ARGUMENTS = frozenset({"after"})


class TaskDefinition(Generic[P, R]):
    """A task: a module-level function plus how to run it.

    Called inside a ``@pipeline`` body it adds a node to the graph and returns a
    placeholder for its output; called anywhere else it simply runs the function, so a
    task can be tried in a notebook or a unit test as plain Python.
    """

    def __init__(self, fn: Callable[P, R], *, name: str, options: TaskOptions) -> None:
        _check_module_level(fn)
        clash = RESERVED_ARGUMENTS & set(inspect.signature(fn).parameters)
        if clash:
            raise PipelineDefinitionError(
                f"task {name!r}: the argument name(s) {sorted(clash)} are reserved for "
                "modelyard (order-only dependencies); rename them",
                details={"task": name, "arguments": sorted(clash)},
            )
        self.fn = fn
        self.name = name
        self.options = options
        self.signature = inspect.signature(fn)
        functools.update_wrapper(self, fn)

    @property
    def ref(self) -> str:
        """Where a worker finds this task: ``"module:qualname"``."""
        return f"{self.fn.__module__}:{self.fn.__qualname__}"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        from modelyard.pipelines.builder import current_builder

        builder = current_builder()
        if builder is None:
            return self.fn(*args, **kwargs)
        after = cast(Iterable[Any], kwargs.pop("after", ()))
        return cast(R, builder.add_call(self, args, dict(kwargs), after=after))

    def map(self, items: Iterable[Any], /, *args: Any, **kwargs: Any) -> list[R]:
        """Run the task once per item, passing the item as its first argument.

        Inside a pipeline the result is a placeholder for the list of outputs, in the
        order of ``items``; pass it to another task to join.
        """
        from modelyard.pipelines.builder import current_builder

        builder = current_builder()
        if builder is None:
            return [self.fn(*(item, *args), **kwargs) for item in items]
        after = cast(Iterable[Any], kwargs.pop("after", ()))
        return cast(
            list[R], builder.add_call(self, (items, *args), kwargs, after=after, mapped=True)
        )

    def with_options(self, **changes: Any) -> TaskDefinition[P, R]:
        """A copy with some options changed, e.g. ``train.with_options(retries=3)``."""
        options = _options(self.name, self.options, **changes)
        return TaskDefinition(self.fn, name=self.name, options=options)

    def __repr__(self) -> str:
        return f"<task {self.name} ({self.ref})>"


def _check_module_level(fn: Callable[..., Any]) -> None:
    if "<locals>" in fn.__qualname__ or "<lambda>" in fn.__qualname__:
        raise PipelineDefinitionError(
            f"task {fn.__qualname__!r} must be a module-level function, so that a worker "
            "process can import it",
            details={"task": fn.__qualname__},
        )


def _options(name: str, base: TaskOptions, **changes: Any) -> TaskOptions:
    values = base.model_dump(exclude_defaults=True)
    retry = dict(values.pop("retry", {}))
    for key in ("retries", "retry_delay", "retry_on", "retry_on_exit_codes"):
        if key in changes:
            value = changes.pop(key)
            field = {
                "retries": "retries",
                "retry_delay": "delay",
                "retry_on": "on_exceptions",
                "retry_on_exit_codes": "on_exit_codes",
            }[key]
            if field == "on_exceptions":
                value = tuple(_exception_name(e) for e in value)
            retry[field] = value
    if "retry" in changes:
        retry.update(RetryPolicy.model_validate(changes.pop("retry")).model_dump())
    values.update(changes)
    values["retry"] = retry
    try:
        return TaskOptions.model_validate(values)
    except ValueError as exc:
        raise PipelineDefinitionError(
            f"task {name!r}: invalid options: {exc}", details={"task": name}
        ) from exc


def _exception_name(value: type[BaseException] | str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, type) and issubclass(value, BaseException):
        module = value.__module__
        return value.__qualname__ if module == "builtins" else f"{module}.{value.__qualname__}"
    raise PipelineDefinitionError(f"retry_on takes exception classes, not {value!r}")


@overload
def task(fn: Callable[P, R], /) -> TaskDefinition[P, R]: ...


@overload
def task(
    *,
    name: str | None = None,
    retries: int = 0,
    retry_delay: timedelta | float = 1.0,
    retry_on: Sequence[type[BaseException] | str] = (),
    retry_on_exit_codes: Sequence[int] = (),
    timeout: timedelta | float | None = None,
    resources: Resources | dict[str, Any] | None = None,
    pool: str | None = None,
    pool_slots: int = 1,
    cache: bool = True,
    secrets: Sequence[str] = (),
    env: Environment | dict[str, Any] | None = None,
    track: bool = False,
) -> Callable[[Callable[P, R]], TaskDefinition[P, R]]: ...


def task(fn: Callable[..., Any] | None = None, /, **settings: Any) -> Any:
    """Declare a task.

    Args:
        name: Display name; defaults to the function's name.
        retries: Extra attempts after a failure.
        retry_delay: Base backoff delay (seconds or a timedelta); grows exponentially
            with jitter.
        retry_on: Retry only these exception types; others fail at once.
        retry_on_exit_codes: Retry a crashed worker only for these exit codes.
        timeout: Stop an attempt after this long (seconds or a timedelta).
        resources: ``Resources(cpu=..., memory=..., gpu=...)``.
        pool: A named concurrency pool shared by all runs; ``pool_slots`` is the weight.
        cache: Reuse a previous result when code, inputs, parameters and environment
            are unchanged (on by default: tasks are meant to be pure).
        secrets: Project secrets to inject as environment variables.
        env: Requirements or image for remote runtimes.
        track: Give each attempt an MLflow run in the project's experiment, active while
            the task runs (``mlflow.log_*`` calls and autologging land in it), tagged
            with the pipeline run, the task, the content digests of its inputs and its
            code version.
    """

    def decorate(function: Callable[P, R]) -> TaskDefinition[P, R]:
        changes = dict(settings)
        name = changes.pop("name", None) or function.__name__
        options = _options(name, TaskOptions(), **changes)
        return TaskDefinition(function, name=name, options=options)

    if fn is not None:
        return decorate(fn)
    return decorate
