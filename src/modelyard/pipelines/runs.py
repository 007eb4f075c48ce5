"""Runs in the metadata store: creating, retrying and cancelling them, and the lease an
engine holds on a run while it drives it.

These act on the store only, so the API, the scheduler, ``backfill`` and the engine all
create and change runs the same way. Whoever drives a run (an engine in ``modelyard
run``, or the run executor inside ``modelyard up``) holds its lease and renews it while
it lives; a lease that lapsed, or whose owner process on this machine is gone, may be
taken over, so a run is never driven twice and never left behind.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jsonschema import Draft202012Validator
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from modelyard.errors import ConflictError, NotFoundError
from modelyard.pipelines.errors import PipelineDefinitionError
from modelyard.pipelines.graph import downstream_of, topological_order
from modelyard.specs.pipelines import NodeSpec, PipelineSpec
from modelyard.specs.runs import RunState, TaskState
from modelyard.store.db import transaction
from modelyard.store.models import PipelineRun, Pool, Secret, TaskRun

PARENT = -1
DEFAULT_LEASE = timedelta(seconds=30)
_HOST = socket.gethostname()


class RunNotFoundError(NotFoundError):
    default_code = "run/not_found"


class RunLeasedError(ConflictError):
    default_code = "run/leased"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_owner() -> str:
    """A name for one engine: this machine, this process and a random token."""
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class NewRun:
    """What a run is created with, besides its pipeline and parameters."""

    logical_date: datetime | None = None
    trigger: str = "manual"
    created_by: str | None = None
    max_parallelism: int | None = None
    schedule_id: str | None = None
    interval_key: str | None = None
    owner: str | None = None
    lease: timedelta = DEFAULT_LEASE
    runtime: str = "local"


def interval_key(pipeline: str, logical_date: datetime) -> str:
    """The key that makes one run per pipeline and interval (scheduled or backfilled)."""
    return f"{pipeline}@{logical_date.astimezone(UTC).isoformat()}"


def check_params(spec: PipelineSpec, params: dict[str, Any]) -> dict[str, Any]:
    """Parameters checked against the pipeline's parameter schema, defaults filled in
    (for runs created from a spec alone, without the pipeline's code at hand).

    Raises:
        PipelineDefinitionError: a parameter is missing, unknown or of the wrong type.
    """
    schema = spec.params_schema
    properties = schema.get("properties", {})
    filled = {
        name: prop["default"]
        for name, prop in properties.items()
        if isinstance(prop, dict) and "default" in prop
    }
    filled.update(params)
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda err: list(err.absolute_path))
    if errors:
        problems = [
            {"loc": [str(p) for p in err.absolute_path] or ["params"], "msg": err.message}
            for err in errors
        ]
        raise PipelineDefinitionError(
            f"pipeline {spec.name!r}: invalid parameters: "
            + "; ".join(f"{'.'.join(p['loc'])}: {p['msg']}" for p in problems),
            code="pipeline/invalid_params",
            details={"pipeline": spec.name, "errors": problems},
        )
    return filled


def check_secrets(session: Session, project_id: str, project: str, spec: PipelineSpec) -> None:
    """Refuse a run whose tasks need secrets the project does not have, before it starts.

    Raises:
        PipelineDefinitionError: naming the task, the missing secrets and the project.
    """
    wanted = {name: node.id for node in spec.nodes for name in node.options.secrets}
    missing = missing_secrets(session, project_id, wanted)
    if missing:
        raise PipelineDefinitionError(
            f"pipeline {spec.name!r}: task {wanted[missing[0]]!r} needs secret(s) {missing}, "
            f"which project {project!r} does not have; set them with 'modelyard secrets set'",
            code="pipeline/missing_secret",
            details={"pipeline": spec.name, "secrets": missing, "project": project},
        )


def missing_secrets(session: Session, project_id: str, names: Iterable[str]) -> list[str]:
    """Those of ``names`` the project has no secret of, sorted."""
    wanted = set(names)
    if not wanted:
        return []
    query = select(Secret.name).where(
        Secret.project_id == project_id, Secret.name.in_(sorted(wanted))
    )
    return sorted(wanted - set(session.scalars(query)))


def check_pools(session: Session, spec: PipelineSpec) -> None:
    """Refuse a run whose tasks use a pool that does not exist or is too small.

    Raises:
        PipelineDefinitionError: naming the task and the pool.
    """
    pools = {pool.name: pool.slots for pool in session.scalars(select(Pool))}
    for node in spec.nodes:
        name, slots = node.options.pool, node.options.pool_slots
        if name is None:
            continue
        if name not in pools:
            raise PipelineDefinitionError(
                f"task {node.id!r} of pipeline {spec.name!r} uses pool {name!r}, which does "
                "not exist; create it first",
                code="pipeline/unknown_pool",
                details={"task": node.id, "pool": name},
            )
        if slots > pools[name]:
            raise PipelineDefinitionError(
                f"task {node.id!r} of pipeline {spec.name!r} needs {slots} slots of pool "
                f"{name!r}, which has {pools[name]}",
                code="pipeline/pool_too_small",
                details={"task": node.id, "pool": name},
            )


def task_run_for(run_id: str, node: NodeSpec, map_index: int, state: TaskState) -> TaskRun:
    """A task run, carrying the pool slots it takes while it runs (a mapped parent runs
    nothing itself and takes none)."""
    occupies = node.map_over is None or map_index != PARENT
    return TaskRun(
        run_id=run_id,
        node_id=node.id,
        map_index=map_index,
        state=state,
        pool=node.options.pool if occupies else None,
        pool_slots=node.options.pool_slots if occupies and node.options.pool else 0,
    )


def create_run(
    session: Session,
    project_id: str,
    spec: PipelineSpec,
    params: dict[str, Any],
    new: NewRun = NewRun(),
) -> PipelineRun:
    """Add a queued run and a pending task run per node to the session (flushed).

    Raises:
        PipelineDefinitionError: the graph has a cycle or a task's pool is unusable.
    """
    topological_order(spec)
    check_pools(session, spec)
    run = PipelineRun(
        project_id=project_id,
        pipeline=spec.name,
        source=spec.source,
        spec=spec.model_dump(mode="json"),
        params=params,
        logical_date=new.logical_date.astimezone(UTC) if new.logical_date else None,
        state=RunState.QUEUED,
        trigger=new.trigger,
        runtime=new.runtime,
        created_by=new.created_by,
        max_parallelism=new.max_parallelism,
        schedule_id=new.schedule_id,
        interval_key=new.interval_key,
        owner=new.owner,
        lease_until=utcnow() + new.lease if new.owner else None,
    )
    session.add(run)
    session.flush()
    for node in spec.nodes:
        session.add(task_run_for(run.id, node, PARENT, TaskState.PENDING))
    session.flush()
    return run


def reset_for_retry(session: Session, run_id: str) -> int:
    """Queue a finished run again: failed, cancelled and skipped-by-failure tasks and
    everything downstream of them run again; finished upstream outputs are reused.

    Returns how many task runs were reset.

    Raises:
        RunNotFoundError: no such run.
        ConflictError: the run has not finished.
    """
    run = session.get(PipelineRun, run_id)
    if run is None:
        raise RunNotFoundError(f"run {run_id!r} does not exist")
    if not RunState(run.state).finished:
        raise ConflictError(
            f"run {run_id!r} is {run.state}; only a finished run can be retried",
            code="run/not_finished",
        )
    if run.state == RunState.SUCCEEDED:
        return 0
    spec = PipelineSpec.model_validate(run.spec)
    task_runs = list(session.scalars(select(TaskRun).where(TaskRun.run_id == run_id)))
    broken = {
        tr.node_id
        for tr in task_runs
        if tr.state in {TaskState.FAILED, TaskState.CANCELLED, TaskState.UPSTREAM_FAILED}
    }
    reset = downstream_of(spec, broken)
    count = 0
    for task_run in task_runs:
        if task_run.node_id not in reset:
            continue
        if task_run.map_index != PARENT:
            session.delete(task_run)
            continue
        task_run.state = TaskState.PENDING
        task_run.attempts = 0
        task_run.error = None
        task_run.output = None
        task_run.next_attempt_at = None
        task_run.started_at = None
        task_run.finished_at = None
        count += 1
    run.state = RunState.QUEUED
    run.finished_at = None
    run.error = None
    run.cancel_requested = False
    return count


def request_cancel(sessions: sessionmaker[Session], run_id: str) -> bool:
    """Stop a run (see :func:`cancel_run`); returns whether it was unfinished."""
    with transaction(sessions) as session:
        run = session.get(PipelineRun, run_id)
        return run is not None and cancel_run(session, run)


def cancel_run(session: Session, run: PipelineRun) -> bool:
    """Stop a run: a run nobody drives is cancelled at once; a driven one is asked to
    stop, and its engine stops its tasks and records it. Returns whether it was
    unfinished."""
    if RunState(run.state).finished:
        return False
    run.cancel_requested = True
    now = utcnow()
    if lease_free(run, now):
        for task_run in session.scalars(select(TaskRun).where(TaskRun.run_id == run.id)):
            if not TaskState(task_run.state).finished:
                task_run.state = TaskState.CANCELLED
                task_run.finished_at = now
        run.state = RunState.CANCELLED
        run.finished_at = now
        run.owner = None
        run.lease_until = None
    return True


# -- leases ---------------------------------------------------------------------------


def lease_free(run: PipelineRun, now: datetime) -> bool:
    """Whether nobody drives the run: no owner, a lapsed lease, or an owner process on
    this machine that has exited."""
    if run.owner is None or run.lease_until is None or run.lease_until <= now:
        return True
    return owner_gone(run.owner)


def owner_gone(owner: str) -> bool:
    """Whether the process an owner name (from :func:`new_owner`) stands for is known to
    have exited: it ran on this machine and its process is no more."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    return host == _HOST and pid.isdigit() and not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(
    sessions: sessionmaker[Session], run_id: str, owner: str, lease: timedelta = DEFAULT_LEASE
) -> bool:
    """Take the run's lease if it is free or already ours (compare-and-swap on the
    previous holder, so two engines never both win).

    Raises:
        RunNotFoundError: no such run.
    """
    now = utcnow()
    with transaction(sessions) as session:
        run = session.get(PipelineRun, run_id)
        if run is None:
            raise RunNotFoundError(f"run {run_id!r} does not exist")
        if run.owner != owner and not lease_free(run, now):
            return False
        held_by = (
            PipelineRun.owner.is_(None) if run.owner is None else PipelineRun.owner == run.owner
        )
        result = session.execute(
            update(PipelineRun)
            .where(PipelineRun.id == run_id, held_by)
            .values(owner=owner, lease_until=now + lease)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))


def renew(
    sessions: sessionmaker[Session], run_id: str, owner: str, lease: timedelta = DEFAULT_LEASE
) -> bool:
    """Extend our lease; False when another engine has taken the run over."""
    with transaction(sessions) as session:
        result = session.execute(
            update(PipelineRun)
            .where(PipelineRun.id == run_id, PipelineRun.owner == owner)
            .values(lease_until=utcnow() + lease)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))


def hand_over(
    sessions: sessionmaker[Session],
    run_id: str,
    owner: str,
    to: str,
    lease: timedelta = DEFAULT_LEASE,
) -> bool:
    """Pass our lease to ``to`` (a driver elsewhere); False when it is no longer ours."""
    with transaction(sessions) as session:
        result = session.execute(
            update(PipelineRun)
            .where(PipelineRun.id == run_id, PipelineRun.owner == owner)
            .values(owner=to, lease_until=utcnow() + lease)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))


def release(sessions: sessionmaker[Session], run_id: str, owner: str) -> None:
    with transaction(sessions) as session:
        session.execute(
            update(PipelineRun)
            .where(PipelineRun.id == run_id, PipelineRun.owner == owner)
            .values(owner=None, lease_until=None)
            .execution_options(synchronize_session=False)
        )


def claimable(session: Session, limit: int) -> list[str]:
    """Unfinished runs nobody drives, oldest first: what an executor should pick up."""
    now = utcnow()
    rows = session.scalars(
        select(PipelineRun)
        .where(
            PipelineRun.state.in_([RunState.QUEUED, RunState.RUNNING]),
            or_(
                PipelineRun.owner.is_(None),
                PipelineRun.lease_until.is_(None),
                PipelineRun.lease_until <= now,
                PipelineRun.owner.startswith(f"{_HOST}:"),
            ),
        )
        .order_by(PipelineRun.id)
        .limit(limit * 4)
    )
    return [run.id for run in rows if lease_free(run, now)][:limit]
