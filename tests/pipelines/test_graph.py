"""Graph checks on specs from any source (a hand-edited JSON spec can have a cycle)."""

from __future__ import annotations

import pytest

from modelyard.pipelines.errors import PipelineDefinitionError
from modelyard.pipelines.graph import downstream_of, topological_order, validate
from modelyard.specs.pipelines import NodeSpec, OutputInput, ParamInput, PipelineSpec, TaskOptions
from tests.pipelines import sample


def _spec(*nodes: NodeSpec, params: tuple[str, ...] = ()) -> PipelineSpec:
    schema = {"properties": {name: {} for name in params}}
    return PipelineSpec(name="p", source="", params_schema=schema, nodes=nodes)


def _node(node_id: str, *reads: str, after: tuple[str, ...] = ()) -> NodeSpec:
    return NodeSpec(
        id=node_id,
        task="m:f",
        task_name=node_id,
        options=TaskOptions(),
        inputs={f"x{i}": OutputInput(node=r) for i, r in enumerate(reads)},
        after=after,
    )


def test_topological_order_respects_every_kind_of_edge() -> None:
    order = [n.id for n in topological_order(sample.daily.spec())]
    assert order.index("extract") < order.index("load") < order.index("is_big")
    assert order.index("is_big") < order.index("alert")
    assert order.index("total") < order.index("notify")


def test_a_cycle_is_refused_naming_its_tasks() -> None:
    spec = _spec(_node("a", "c"), _node("b", "a"), _node("c", "b"), _node("d"))
    with pytest.raises(PipelineDefinitionError) as raised:
        topological_order(spec)
    assert raised.value.details["tasks"] == ["a", "b", "c"]
    assert "cycle" in raised.value.message


def test_unknown_nodes_and_params_are_refused() -> None:
    with pytest.raises(PipelineDefinitionError, match="unknown task"):
        validate(_spec(_node("a", after=("ghost",))))
    reads_param = NodeSpec(
        id="a",
        task="m:f",
        task_name="a",
        options=TaskOptions(),
        inputs={"x": ParamInput(name="nope")},
    )
    with pytest.raises(PipelineDefinitionError, match="unknown parameter"):
        validate(_spec(reads_param, params=("day",)))
    with pytest.raises(PipelineDefinitionError, match="same id"):
        validate(_spec(_node("a"), _node("a")))


def test_downstream_follows_data_conditions_and_order_edges() -> None:
    spec = sample.daily.spec()
    assert downstream_of(spec, ["load"]) == {"load", "is_big", "alert"}
    assert downstream_of(spec, ["score"]) == {"score", "total", "notify"}
    assert downstream_of(spec, ["extract"]) == {n.id for n in spec.nodes} - set()
