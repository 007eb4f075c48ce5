"""What the engine knows of a run's task states between steps.

The engine driving a run holds its lease, so it is the only writer of the run's task
runs: it keeps their states here, updated as it writes them, and each step asks this
which nodes are in play instead of reading the whole run back. Every question is
answered from counters and sets kept as states change, so a step costs the same in a
10-task and a 5,000-task run.
"""

from __future__ import annotations

from collections.abc import Iterable

from modelyard.pipelines.graph import upstream_of
from modelyard.pipelines.runs import PARENT
from modelyard.specs.pipelines import PipelineSpec
from modelyard.specs.runs import TaskState
from modelyard.store.models import TaskRun

Key = tuple[str, int]  # (node id, map index)


class RunProgress:
    """Task states of one run, and which nodes may change next."""

    def __init__(self, spec: PipelineSpec, task_runs: Iterable[TaskRun]) -> None:
        self.upstream = {node.id: upstream_of(node) for node in spec.nodes}
        self.downstream: dict[str, set[str]] = {node.id: set() for node in spec.nodes}
        for node, parents in self.upstream.items():
            for parent in parents:
                self.downstream[parent].add(node)
        self.mapped = {node.id for node in spec.nodes if node.map_over is not None}
        self.states: dict[Key, TaskState] = {}
        self._queued: dict[str, int] = {}  # queued task runs per node
        self._open_items: dict[str, int] = {}  # unfinished mapped items per node
        self._unfinished = 0
        self._candidates: set[str] = set()  # pending nodes whose upstream may have finished
        self._joins: set[str] = set()  # mapped nodes whose items may all have finished
        self.update(task_runs)
        self._candidates |= {
            node
            for (node, index), state in self.states.items()
            if index == PARENT and state is TaskState.PENDING
        }

    @property
    def settled(self) -> bool:
        """Whether every task run has finished."""
        return self._unfinished == 0

    def update(self, task_runs: Iterable[TaskRun]) -> None:
        """Take in task runs as they now are (after the engine changed them)."""
        for task_run in task_runs:
            self._set((task_run.node_id, task_run.map_index), TaskState(task_run.state))

    def in_play(self) -> set[str]:
        """Nodes that may change now: queued ones, pending ones whose upstream all
        finished, and mapped ones whose items all finished. Each candidate is offered
        once per change that made it one."""
        nodes = {node for node, count in self._queued.items() if count > 0}
        for node in self._candidates:
            waiting = self.states.get((node, PARENT)) is TaskState.PENDING
            if waiting and all(self.states[(up, PARENT)].finished for up in self.upstream[node]):
                nodes.add(node)
        for node in self._joins:
            running = self.states.get((node, PARENT)) is TaskState.RUNNING
            if running and self._open_items.get(node, 0) == 0:
                nodes.add(node)
        self._candidates.clear()
        self._joins.clear()
        return nodes

    def _set(self, key: Key, state: TaskState) -> None:
        old = self.states.get(key)
        if old is state:
            return
        self.states[key] = state
        node, index = key
        if old is TaskState.QUEUED:
            self._queued[node] -= 1
        if state is TaskState.QUEUED:
            self._queued[node] = self._queued.get(node, 0) + 1
        was_open = old is not None and not old.finished
        is_open = not state.finished
        self._unfinished += int(is_open) - int(was_open)
        if index != PARENT:
            self._open_items[node] = self._open_items.get(node, 0) + int(is_open) - int(was_open)
            if not is_open:
                self._joins.add(node)
        elif state.finished:
            self._candidates |= self.downstream[node]
        elif state is TaskState.RUNNING and node in self.mapped:
            self._joins.add(node)  # just expanded (perhaps over an empty list)
