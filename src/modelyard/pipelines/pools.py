"""Pools in the store: named slot limits shared by every run and engine (Airflow's
pools). Slots in use are counted from the task runs running in the store, so what one
engine hands out, every other engine sees."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from modelyard.specs.runs import TaskState
from modelyard.store.models import Pool, TaskRun


def claim_view(
    session: Session, wanted: Iterable[str | None]
) -> tuple[dict[str, int], dict[str, int]]:
    """Slot limits and slots in use of the pools named, for handing slots out.

    Each pool's row is locked first (in name order, so engines never deadlock), and stays
    locked until the caller's transaction ends: two engines never both take the last
    slot, the second counts the first's task.
    """
    names = sorted({name for name in wanted if name is not None})
    if not names:
        return {}, {}
    for name in names:
        session.execute(update(Pool).where(Pool.name == name).values(slots=Pool.slots))
    limits = {
        pool.name: pool.slots for pool in session.scalars(select(Pool).where(Pool.name.in_(names)))
    }
    usage = session.execute(
        select(TaskRun.pool, func.sum(TaskRun.pool_slots))
        .where(TaskRun.state == TaskState.RUNNING, TaskRun.pool.in_(names))
        .group_by(TaskRun.pool)
    ).all()
    return limits, {str(pool): int(slots or 0) for pool, slots in usage}


def queued_per_pool(session: Session) -> dict[str, int]:
    """Task runs waiting for a slot or a worker, per pool (``default``: no pool)."""
    rows = session.execute(
        select(TaskRun.pool, func.count())
        .where(TaskRun.state == TaskState.QUEUED)
        .group_by(TaskRun.pool)
    ).all()
    return {str(pool or "default"): int(count) for pool, count in rows}
