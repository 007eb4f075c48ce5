"""Attempt logs: what each attempt printed and logged, live from its file on the machine
that ran it, or from the copy kept in the artifact store once it finished."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelyard.artifacts import ArtifactStore
from modelyard.store.models import TaskAttempt, TaskRun


def attempts_of(
    session: Session, run_id: str, task: str | None = None
) -> list[tuple[str, TaskAttempt]]:
    """The run's attempts, oldest first, each with its task's display name
    (``node`` or ``node[index]`` for a mapped item)."""
    query = (
        select(TaskRun.node_id, TaskRun.map_index, TaskAttempt)
        .join(TaskAttempt, TaskAttempt.task_run_id == TaskRun.id)
        .where(TaskRun.run_id == run_id)
        .order_by(TaskAttempt.started_at, TaskAttempt.id)
    )
    if task is not None:
        query = query.where(TaskRun.node_id == task)
    rows = session.execute(query).all()
    return [(node if index < 0 else f"{node}[{index}]", attempt) for node, index, attempt in rows]


def read_log(store: ArtifactStore, attempt: TaskAttempt, offset: int = 0) -> bytes:
    """The attempt's log from ``offset`` on: from its live file when this machine has it,
    else from the artifact store's copy (an attempt that printed nothing has none)."""
    path = Path(attempt.log_path) if attempt.log_path else None
    if path is not None and path.is_file():
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read()
    if attempt.log_ref is not None:
        return store.get_bytes(str(attempt.log_ref["digest"]))[offset:]
    return b""
