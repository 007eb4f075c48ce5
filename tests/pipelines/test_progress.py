"""The engine's view of a run between steps: which nodes are in play."""

from __future__ import annotations

from modelyard.pipelines.progress import RunProgress
from modelyard.specs.pipelines import NodeSpec, OutputInput, PipelineSpec, TaskOptions
from modelyard.specs.runs import TaskState
from modelyard.store.models import TaskRun


def node(name: str, *upstream: str, mapped: bool = False) -> NodeSpec:
    inputs = {f"in_{up}": OutputInput(node=up) for up in upstream}
    if mapped:
        inputs = {"items": OutputInput(node=upstream[0])}
    return NodeSpec(
        id=name,
        task=f"flows:{name}",
        task_name=name,
        options=TaskOptions(),
        inputs=inputs,
        map_over="items" if mapped else None,
    )


def spec(*nodes: NodeSpec) -> PipelineSpec:
    return PipelineSpec(name="p", source="p.py:p", params_schema={}, nodes=nodes)


def run(node_id: str, state: TaskState, index: int = -1) -> TaskRun:
    return TaskRun(run_id="r", node_id=node_id, map_index=index, state=state)


def test_a_chain_offers_each_node_once_its_upstream_finished() -> None:
    progress = RunProgress(
        spec(node("a"), node("b", "a"), node("c", "b")),
        [run(n, TaskState.PENDING) for n in "abc"],
    )
    assert progress.in_play() == {"a"}
    assert progress.in_play() == set()  # nothing changed since
    progress.update([run("a", TaskState.QUEUED)])
    assert progress.in_play() == {"a"}  # queued nodes stay in play until dispatched
    progress.update([run("a", TaskState.RUNNING)])
    assert progress.in_play() == set()
    progress.update([run("a", TaskState.SUCCEEDED)])
    assert progress.in_play() == {"b"}
    assert not progress.settled
    progress.update([run("b", TaskState.FAILED), run("c", TaskState.UPSTREAM_FAILED)])
    assert progress.settled


def test_a_join_waits_for_every_upstream() -> None:
    progress = RunProgress(
        spec(node("a"), node("b"), node("join", "a", "b")),
        [run(n, TaskState.PENDING) for n in ("a", "b", "join")],
    )
    assert progress.in_play() == {"a", "b"}
    progress.update([run("a", TaskState.SUCCEEDED)])
    assert progress.in_play() == set()
    progress.update([run("b", TaskState.CACHED)])
    assert progress.in_play() == {"join"}


def test_a_mapped_node_joins_once_all_its_items_finished() -> None:
    progress = RunProgress(
        spec(node("items"), node("each", "items", mapped=True)),
        [run("items", TaskState.SUCCEEDED), run("each", TaskState.PENDING)],
    )
    assert progress.in_play() == {"each"}
    progress.update(
        [
            run("each", TaskState.RUNNING),
            run("each", TaskState.QUEUED, 0),
            run("each", TaskState.QUEUED, 1),
        ]
    )
    assert progress.in_play() == {"each"}  # its queued items
    progress.update([run("each", TaskState.RUNNING, 0), run("each", TaskState.RUNNING, 1)])
    assert progress.in_play() == set()
    progress.update([run("each", TaskState.SUCCEEDED, 0)])
    assert progress.in_play() == set()  # one item still runs
    progress.update([run("each", TaskState.FAILED, 1)])
    assert progress.in_play() == {"each"}
    assert not progress.settled  # the parent finishes when the engine joins it
    progress.update([run("each", TaskState.FAILED)])
    assert progress.settled


def test_a_map_over_an_empty_list_joins_at_once() -> None:
    progress = RunProgress(
        spec(node("items"), node("each", "items", mapped=True)),
        [run("items", TaskState.SUCCEEDED), run("each", TaskState.PENDING)],
    )
    progress.in_play()
    progress.update([run("each", TaskState.RUNNING)])  # expanded over nothing
    assert progress.in_play() == {"each"}


def test_a_restarted_engine_sees_what_is_left() -> None:
    progress = RunProgress(
        spec(node("a"), node("b", "a"), node("c", "a")),
        [run("a", TaskState.SUCCEEDED), run("b", TaskState.SUCCEEDED), run("c", TaskState.PENDING)],
    )
    assert progress.in_play() == {"c"}
