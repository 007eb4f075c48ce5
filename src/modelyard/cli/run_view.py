"""How a run looks in the terminal: a tree of task states with a progress line, the
same for a run on this machine and one on a server."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

from rich.console import Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from modelyard.cli.output import console
from modelyard.specs.runs import RunState, TaskState

_STYLE = {
    TaskState.SUCCEEDED: "green",
    TaskState.CACHED: "cyan",
    TaskState.RUNNING: "yellow",
    TaskState.FAILED: "red",
    TaskState.UPSTREAM_FAILED: "red",
    TaskState.CANCELLED: "magenta",
    TaskState.SKIPPED: "dim",
}


class RunLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def pipeline(self) -> str: ...
    @property
    def state(self) -> str: ...


class TaskLike(Protocol):
    @property
    def node_id(self) -> str: ...
    @property
    def map_index(self) -> int: ...
    @property
    def state(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def finished_at(self) -> datetime | None: ...


def run_view(run: RunLike, tasks: Sequence[TaskLike]) -> Group:
    """A progress bar over the run's tasks, then one row per task (mapped items
    indented under their task)."""
    finished = sum(1 for t in tasks if TaskState(t.state).finished)
    running = sum(1 for t in tasks if t.state == TaskState.RUNNING)
    table = Table(title=f"run {run.id} · {run.pipeline} · {run.state}", title_justify="left")
    for column in ("task", "state", "attempts", "seconds"):
        table.add_column(column)
    for task in tasks:
        name = task.node_id if task.map_index < 0 else f"  └ {task.node_id}[{task.map_index}]"
        started, ended = task.started_at, task.finished_at
        seconds = (
            f"{(ended - started).total_seconds():.2f}"
            if started is not None and ended is not None
            else "-"
        )
        style = _STYLE.get(TaskState(task.state), "")
        table.add_row(
            name,
            f"[{style}]{task.state}[/{style}]" if style else task.state,
            str(task.attempts),
            seconds,
        )
    bar = ProgressBar(total=max(len(tasks), 1), completed=finished, width=40)
    line = Text(f" {finished}/{len(tasks)} tasks finished, {running} running")
    header = Table.grid()
    header.add_row(bar, line)
    return Group(header, table)


R = TypeVar("R", bound=RunLike)
T = TypeVar("T", bound=TaskLike)


def watch(fetch: Callable[[], tuple[R, Sequence[T]]], interval: float = 0.25) -> RunState:
    """Redraw the run until it finishes; returns its final state."""
    run, tasks = fetch()
    with Live(run_view(run, tasks), console=console, refresh_per_second=8) as live:
        while not RunState(run.state).finished:
            time.sleep(interval)
            run, tasks = fetch()
            live.update(run_view(run, tasks))
    return RunState(run.state)
