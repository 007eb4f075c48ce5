"""Defining pipelines: graphs from data flow, options, parameters, and clear errors."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from modelyard.pipelines.builder import when
from modelyard.pipelines.errors import PipelineDefinitionError
from modelyard.pipelines.pipeline import pipeline
from modelyard.pipelines.task import task
from modelyard.specs.pipelines import (
    CollectionInput,
    LiteralInput,
    OutputInput,
    ParamInput,
    PipelineSpec,
)
from tests.pipelines import sample


def _nodes(spec: PipelineSpec) -> dict[str, Any]:
    return {node.id: node for node in spec.nodes}


def test_the_graph_follows_data_flow() -> None:
    spec = sample.daily.spec("tests/pipelines/sample.py:daily")
    nodes = _nodes(spec)
    assert list(nodes) == ["extract", "load", "score", "total", "is_big", "alert", "notify"]
    assert nodes["extract"].inputs == {
        "day": ParamInput(name="day"),
        "rows": ParamInput(name="rows"),
    }
    assert nodes["load"].inputs == {
        "rows": OutputInput(node="extract"),
        "table": ParamInput(name="table"),
    }
    assert nodes["score"].map_over == "item"
    assert nodes["score"].inputs["factor"] == LiteralInput(value=2.0)
    assert nodes["total"].inputs == {"values": OutputInput(node="score")}
    assert nodes["alert"].conditions[0].value == OutputInput(node="is_big")
    assert nodes["notify"].after == ("total",)
    assert nodes["notify"].inputs == {"message": LiteralInput(value="done")}
    assert nodes["extract"].task == "tests.pipelines.sample:extract"


def test_task_options_land_in_the_spec() -> None:
    nodes = _nodes(sample.daily.spec())
    load = nodes["load"].options
    assert load.retry.retries == 3
    assert load.retry.on_exceptions == ("ConnectionError",)
    assert load.timeout == timedelta(seconds=30)
    assert (load.pool, load.pool_slots) == ("warehouse", 2)
    score = nodes["score"].options
    assert score.resources.cpu == 0.5
    assert score.resources.memory == 2**30
    assert score.cache is False
    assert score.secrets == ("DB_PASSWORD",)
    assert nodes["extract"].options.cache is True


def test_the_spec_round_trips_through_json() -> None:
    spec = sample.daily.spec("x.py:daily")
    assert PipelineSpec.model_validate_json(spec.model_dump_json()) == spec


def test_parameters_are_typed_defaulted_and_validated() -> None:
    params = sample.daily.validate_params({"day": "2024-01-31"})
    assert params == {"day": "2024-01-31", "rows": 10, "table": "trips"}
    with pytest.raises(PipelineDefinitionError) as missing:
        sample.daily.validate_params({})
    assert missing.value.code == "pipeline/invalid_params"
    assert "day" in missing.value.message
    with pytest.raises(PipelineDefinitionError) as wrong:
        sample.daily.validate_params({"day": "2024-01-31", "rows": "many"})
    assert "rows" in wrong.value.message
    with pytest.raises(PipelineDefinitionError) as unknown:
        sample.daily.validate_params({"day": "2024-01-31", "colour": "red"})
    assert "colour" in unknown.value.message
    schema = sample.daily.spec().params_schema
    assert schema["required"] == ["day"]


def test_tasks_run_as_plain_python_outside_a_pipeline() -> None:
    assert sample.extract("2024-01-01", rows=3) == [0, 1, 2]
    assert sample.score.map([1, 2], factor=3.0) == [3.0, 6.0]
    assert sample.load([1, 2, 3], "t") == 3


def test_the_same_task_twice_gets_distinct_ids() -> None:
    @pipeline
    def twice() -> None:
        sample.notify("a")
        sample.notify("b")
        sample.notify("c")

    assert [node.id for node in twice.spec().nodes] == ["notify", "notify-2", "notify-3"]


def test_collections_of_outputs_are_inputs() -> None:
    @pipeline
    def fan_in() -> None:
        a = sample.extract("d1")
        b = sample.extract("d2")
        sample.total([a, b])

    node = _nodes(fan_in.spec())["total"]
    assert node.inputs["values"] == CollectionInput(
        shape="list", items={"0": OutputInput(node="extract"), "1": OutputInput(node="extract-2")}
    )


def test_when_with_equals() -> None:
    @pipeline
    def branch(mode: str = "full") -> None:
        with when(mode, equals="full"):
            sample.notify("full")

    condition = branch.spec().nodes[0].conditions[0]
    assert condition.value == ParamInput(name="mode")
    assert (condition.equals, condition.truthy) == ("full", False)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            lambda day: sample.notify(sample.extract(day) if sample.extract(day) else "x"),
            "use `with when(value)",
        ),
        (lambda day: [sample.notify("x") for _ in sample.extract(day)], "use `task.map"),
        (lambda day: sample.notify(f"day {day}"), "format it there"),
        (lambda day: sample.extract(day)[0], "index it there"),
        (lambda day: sample.load(sample.extract(day)), "missing a required argument: 'table'"),
        (lambda day: sample.extract(day, colour="red"), "unexpected keyword argument 'colour'"),
        (lambda day: sample.notify(object()), "a constant of type object"),
        (lambda day: sample.notify("x", after=["not an output"]), "after= takes task outputs"),
        (lambda day: 42, "returns a int"),
        (lambda day: None, "calls no task"),
    ],
)
def test_mistakes_in_a_body_are_clear_errors(body: Any, fragment: str) -> None:
    definition = pipeline(name="broken")(lambda day: body(day))
    with pytest.raises(PipelineDefinitionError) as raised:
        definition.spec()
    assert fragment in raised.value.message
    assert "broken" in raised.value.message


def test_a_task_must_be_module_level() -> None:
    with pytest.raises(PipelineDefinitionError, match="module-level"):

        @task
        def nested() -> None:
            return None


def test_reserved_argument_names_are_refused() -> None:
    def uses_after(after: int) -> int:
        return after

    uses_after.__qualname__ = "uses_after"
    with pytest.raises(PipelineDefinitionError, match="reserved"):
        task(uses_after)


def test_invalid_options_name_the_task() -> None:
    def bad() -> None:
        return None

    bad.__qualname__ = "bad"
    with pytest.raises(PipelineDefinitionError, match="task 'bad': invalid options"):
        task(retries=-1)(bad)
    with pytest.raises(PipelineDefinitionError, match="task 'bad': invalid options"):
        task(resources={"memory": "lots"})(bad)


def test_with_options_copies() -> None:
    stubborn = sample.extract.with_options(retries=5, timeout=timedelta(minutes=2))
    assert stubborn.options.retry.retries == 5
    assert sample.extract.options.retry.retries == 0
    assert stubborn.ref == sample.extract.ref


def test_pipeline_parameters_must_be_named() -> None:
    def star(*days: str) -> None:
        return None

    with pytest.raises(PipelineDefinitionError, match=r"\*args"):
        pipeline(star)
