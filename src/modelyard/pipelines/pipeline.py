"""The ``@pipeline`` decorator: typed parameters plus a body that wires tasks together."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from modelyard.pipelines.builder import GraphBuilder, ParamRef
from modelyard.pipelines.errors import PipelineDefinitionError
from modelyard.pipelines.graph import validate
from modelyard.specs.pipelines import PipelineSpec
from modelyard.specs.schedules import ScheduleSpec


class PipelineDefinition:
    """A pipeline: its parameters (a pydantic model built from the function's signature)
    and its graph (built by running the body once with placeholders)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str,
        description: str,
        schedule: ScheduleSpec | None = None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.description = description
        self.schedule = schedule
        self.params_model = _params_model(fn, name)

    def spec(self, source: str = "") -> PipelineSpec:
        """Build and check the graph.

        Raises:
            PipelineDefinitionError: the body misuses a task or a placeholder, or the graph
                is not a DAG; the message names the pipeline, task and argument.
        """
        builder = GraphBuilder(self.name)
        placeholders = {name: ParamRef(name, self.name) for name in self.params_model.model_fields}
        with builder.active():
            result = self.fn(**placeholders)
        if result is not None and not _is_output(result):
            raise PipelineDefinitionError(
                f"pipeline {self.name!r} returns a {type(result).__name__}; a pipeline body "
                "wires tasks together and returns nothing (or a task's output)",
                details={"pipeline": self.name},
            )
        if not builder.nodes:
            raise PipelineDefinitionError(
                f"pipeline {self.name!r} calls no task", details={"pipeline": self.name}
            )
        spec = PipelineSpec(
            name=self.name,
            source=source,
            params_schema=self.params_model.model_json_schema(),
            nodes=tuple(builder.nodes),
        )
        validate(spec)
        return spec

    def validate_params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Typed, defaulted parameters for a run, as JSON values.

        Raises:
            PipelineDefinitionError: a parameter is missing, unknown or of the wrong type.
        """
        try:
            params = self.params_model.model_validate(dict(values))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'params'}: {err['msg']}"
                for err in exc.errors(include_input=False)
            )
            raise PipelineDefinitionError(
                f"pipeline {self.name!r}: invalid parameters: {problems}",
                code="pipeline/invalid_params",
                details={
                    "pipeline": self.name,
                    "errors": [
                        {"loc": list(err["loc"]), "msg": err["msg"]}
                        for err in exc.errors(include_input=False)
                    ],
                },
            ) from exc
        return params.model_dump(mode="json")

    def __call__(self, **params: Any) -> Any:
        """Call the body as plain Python (tasks run inline, in order)."""
        return self.fn(**params)

    def __repr__(self) -> str:
        return f"<pipeline {self.name}>"


def _is_output(value: Any) -> bool:
    from modelyard.pipelines.builder import TaskOutput

    return isinstance(value, TaskOutput)


def _params_model(fn: Callable[..., Any], name: str) -> type[BaseModel]:
    try:
        hints = typing.get_type_hints(fn)
    except NameError as exc:
        raise PipelineDefinitionError(
            f"pipeline {name!r}: a parameter's type cannot be resolved: {exc}",
            details={"pipeline": name},
        ) from exc
    fields: dict[str, Any] = {}
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise PipelineDefinitionError(
                f"pipeline {name!r}: *args and **kwargs cannot be parameters; name each one",
                details={"pipeline": name},
            )
        annotation = hints.get(parameter.name, Any)
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (annotation, default)
    model: type[BaseModel] = create_model(
        f"{name}_params", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model


def pipeline(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    schedule: str | ScheduleSpec | None = None,
) -> Any:
    """Declare a pipeline. Its parameters are typed and validated for every run.

    ``schedule`` is a cron expression or preset, or a :class:`ScheduleSpec` for the time
    zone, start date, catchup and ``max_active_runs``; ``modelyard schedules apply``
    registers it (paused, until unpaused).

    Example::

        @pipeline(schedule=ScheduleSpec(cron="@daily", catchup=False))
        def taxi(rows: int = 1_000_000) -> None:
            raw = ingest(rows)
            clean = validate(raw)
            features(clean)

    Raises:
        PipelineDefinitionError: the schedule is not a valid cron expression or preset.
    """
    try:
        when = ScheduleSpec(cron=schedule) if isinstance(schedule, str) else schedule
    except ValidationError as exc:
        raise PipelineDefinitionError(
            f"pipeline {name or getattr(fn, '__name__', '?')!r}: invalid schedule: "
            + "; ".join(err["msg"] for err in exc.errors(include_input=False)),
            code="pipeline/invalid_schedule",
        ) from exc

    def decorate(function: Callable[..., Any]) -> PipelineDefinition:
        description = inspect.getdoc(function) or ""
        return PipelineDefinition(
            function, name=name or function.__name__, description=description, schedule=when
        )

    if fn is not None:
        return decorate(fn)
    return decorate
