"""The run engine: drives a pipeline run to its end, one persisted transition at a time.

Every state change is committed before the engine acts on it, so the engine can be
killed at any moment and, run again, continues the run: finished tasks keep their
outputs and are never repeated; an attempt that was running is recorded as interrupted
and started again.

Tasks run on a runtime's worker (here the local warm worker pool) through one entrypoint,
``modelyard.pipelines.execute:run_attempt``; values travel between tasks as artifact
references, so the engine never holds a task's data.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from opentelemetry import trace
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from modelyard.artifacts import ArtifactRef, ArtifactStore
from modelyard.monitoring.metrics import PipelineMetrics
from modelyard.pipelines.cache import TaskCache
from modelyard.pipelines.errors import PipelineDefinitionError
from modelyard.pipelines.graph import topological_order, upstream_of
from modelyard.pipelines.loader import USER_MODULE_PREFIX
from modelyard.pipelines.retries import ATTEMPT_STATE, backoff, error_record, retryable
from modelyard.pipelines.runs import (
    DEFAULT_LEASE,
    PARENT,
    NewRun,
    RunLeasedError,
    RunNotFoundError,
    claim,
    create_run,
    new_owner,
    release,
    renew,
    request_cancel,
    reset_for_retry,
    task_run_for,
)
from modelyard.pipelines.values import digests_in
from modelyard.runtimes import Runtime
from modelyard.runtimes.jobs import Job, Outcome, OutcomeKind
from modelyard.specs.pipelines import (
    CollectionInput,
    Condition,
    Input,
    LiteralInput,
    NodeSpec,
    OutputInput,
    ParamInput,
    PipelineSpec,
)
from modelyard.specs.runs import AttemptState, RunState, TaskState
from modelyard.store.db import transaction
from modelyard.store.models import (
    ArtifactLink,
    PipelineRun,
    Pool,
    TaskAttempt,
    TaskRun,
)

logger = logging.getLogger(__name__)

ENTRYPOINT = "modelyard.pipelines.execute:run_attempt"
_FAILED_UPSTREAM = {TaskState.FAILED, TaskState.UPSTREAM_FAILED, TaskState.CANCELLED}


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Running:
    task_run_id: str
    attempt_id: str
    node: NodeSpec
    map_index: int
    cache_key: str | None
    inputs: dict[str, Any]
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class EngineSettings:
    """How the engine runs tasks.

    Args:
        artifacts_url: Where task outputs are stored.
        logs_dir: Where per-attempt logs are written.
        poll_seconds: How often the engine looks for cancellation and due retries.
        lease: How long a run stays ours without renewal (renewed every third of it).
    """

    artifacts_url: str
    logs_dir: Path
    poll_seconds: float = 0.05
    lease: timedelta = DEFAULT_LEASE


class _Stopped(Exception):
    """The engine was asked to stop, or lost the run to another engine."""


class RunEngine:
    """Executes pipeline runs on a worker pool.

    Args:
        sessions: The metadata store.
        pool: The runtime attempts run on (the local worker pool, later Kubernetes or Ray).
        store: The artifact store (the same one the workers use).
        settings: Engine settings.
        secrets: Looks up a project's secret values by name, for injection.
        metrics: Where task counts, durations and queue depths are recorded.
        tracer_provider: Where run and attempt spans go (default: the global provider).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        pool: Runtime,
        store: ArtifactStore,
        settings: EngineSettings,
        secrets: Callable[[str, tuple[str, ...]], dict[str, str]] | None = None,
        metrics: PipelineMetrics | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.metrics = metrics or PipelineMetrics()
        self.tracer = trace.get_tracer("modelyard.pipelines", tracer_provider=tracer_provider)
        self.sessions = sessions
        self.pool = pool
        self.store = store
        self.settings = settings
        self.secrets = secrets or (lambda _project, _names: {})
        self.cache = TaskCache(store)
        self.owner = new_owner()
        self._pipelines: dict[str, str] = {}  # run id -> pipeline name, for metric labels
        self._queue_labels: set[str] = set()
        self._queue_reported = 0.0

    # -- creating, retrying, cancelling ---------------------------------------------

    def create_run(
        self,
        project_id: str,
        spec: PipelineSpec,
        params: dict[str, Any],
        *,
        logical_date: datetime | None = None,
        trigger: str = "manual",
        created_by: str | None = None,
        max_parallelism: int | None = None,
    ) -> str:
        """Persist a queued run, held by this engine so no other picks it up first;
        returns the run id.

        Raises:
            PipelineDefinitionError: a cycle, or a node names a pool that does not exist.
        """
        new = NewRun(
            logical_date=logical_date,
            trigger=trigger,
            created_by=created_by,
            max_parallelism=max_parallelism,
            owner=self.owner,
            lease=self.settings.lease,
        )
        with transaction(self.sessions) as session:
            return create_run(session, project_id, spec, params, new).id

    def retry(self, run_id: str) -> int:
        """Queue a finished run again, reusing finished upstream outputs; returns how many
        task runs were reset (see :func:`modelyard.pipelines.runs.reset_for_retry`)."""
        with transaction(self.sessions) as session:
            return reset_for_retry(session, run_id)

    def request_cancel(self, run_id: str) -> None:
        request_cancel(self.sessions, run_id)

    # -- executing ----------------------------------------------------------------------

    def execute(
        self,
        run_id: str,
        *,
        on_change: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
    ) -> RunState:
        """Drive the run until it finishes; safe to call again after a crash.

        The engine holds the run's lease while it drives it. When ``stop`` is set, what
        runs is stopped and queued again, the lease is let go and the run's current
        state is returned: another engine (or this one, later) continues it.
        One OpenTelemetry span covers the run; each attempt is a child span.

        Raises:
            RunLeasedError: another live engine drives the run.
        """
        if not claim(self.sessions, run_id, self.owner, self.settings.lease):
            raise RunLeasedError(
                f"run {run_id!r} is being driven by another engine", details={"run": run_id}
            )
        try:
            with self.tracer.start_as_current_span(
                "pipeline run", attributes={"modelyard.run_id": run_id}
            ) as span:
                state = self._drive(run_id, on_change, stop or threading.Event())
                span.set_attribute("modelyard.run_state", state.value)
                return state
        finally:
            release(self.sessions, run_id, self.owner)

    def _drive(
        self, run_id: str, on_change: Callable[[str], None] | None, stop: threading.Event
    ) -> RunState:
        notify = on_change or (lambda _run_id: None)
        spec, params, project_id, logical_date, max_parallel = self._start(run_id)
        order = topological_order(spec)
        upstream = {node.id: upstream_of(node) for node in spec.nodes}
        running: dict[Future[Outcome], _Running] = {}
        lost = False
        try:
            return self._loop(
                run_id,
                spec,
                order,
                upstream,
                params,
                project_id,
                logical_date,
                max_parallel,
                running,
                notify,
                stop,
            )
        except _Stopped as stopped:
            lost = stopped.args == ("lost",)
            return self._state(run_id)
        finally:
            # After a stop or an unexpected error: stop what runs and put it back in the
            # queue, as a restarted engine would after a crash. A run another engine took
            # over is theirs to record.
            for item in running.values():
                item.cancel.set()
            for future, item in running.items():
                future.result()
                if not lost:
                    self._interrupt(item)

    def _loop(
        self,
        run_id: str,
        spec: PipelineSpec,
        order: list[NodeSpec],
        upstream: dict[str, set[str]],
        params: dict[str, Any],
        project_id: str,
        logical_date: datetime | None,
        max_parallel: int | None,
        running: dict[Future[Outcome], _Running],
        notify: Callable[[str], None],
        stop: threading.Event,
    ) -> RunState:
        renew_every = self.settings.lease.total_seconds() / 3
        renewed = time.monotonic()
        while True:
            if stop.is_set():
                raise _Stopped("stopped")
            if time.monotonic() - renewed > renew_every:
                if not renew(self.sessions, run_id, self.owner, self.settings.lease):
                    logger.warning("run %s was taken over by another engine", run_id)
                    raise _Stopped("lost")
                renewed = time.monotonic()
            cancelling = self._cancel_requested(run_id)
            if cancelling:
                for item in running.values():
                    item.cancel.set()
            else:
                with transaction(self.sessions) as session:
                    runs = self._working_set(session, run_id, upstream)
                    self._advance(session, runs, order, upstream, params)
                    self._dispatch(
                        session,
                        runs,
                        run_id,
                        spec,
                        project_id,
                        params,
                        logical_date,
                        max_parallel,
                        running,
                    )
            notify(run_id)
            if not running:
                if cancelling:
                    return self._finish(run_id, cancelled=True)
                if self._settled(run_id):
                    return self._finish(run_id)
            done, _ = wait(
                list(running), timeout=self.settings.poll_seconds, return_when=FIRST_COMPLETED
            )
            for future in done:
                self._record(run_id, project_id, running.pop(future), future.result())

    def _interrupt(self, item: _Running) -> None:
        with transaction(self.sessions) as session:
            task_run = session.get(TaskRun, item.task_run_id)
            attempt = session.get(TaskAttempt, item.attempt_id)
            if task_run is None or attempt is None:
                return
            attempt.state = AttemptState.INTERRUPTED
            attempt.finished_at = utcnow()
            task_run.state = TaskState.QUEUED
            task_run.attempts -= 1

    def _state(self, run_id: str) -> RunState:
        with self.sessions() as session:
            state = session.scalar(select(PipelineRun.state).where(PipelineRun.id == run_id))
        if state is None:
            raise RunNotFoundError(f"run {run_id!r} does not exist")
        return RunState(state)

    def _start(
        self, run_id: str
    ) -> tuple[PipelineSpec, dict[str, Any], str, datetime | None, int | None]:
        with transaction(self.sessions) as session:
            run = session.get(PipelineRun, run_id)
            if run is None:
                raise RunNotFoundError(f"run {run_id!r} does not exist")
            if run.state == RunState.QUEUED:
                run.state = RunState.RUNNING
                run.started_at = run.started_at or utcnow()
            # Attempts a previous engine left running were lost with it: run them again.
            stale = session.scalars(
                select(TaskRun).where(TaskRun.run_id == run_id, TaskRun.state == TaskState.RUNNING)
            )
            for task_run in stale:
                attempts = list(
                    session.scalars(
                        select(TaskAttempt).where(
                            TaskAttempt.task_run_id == task_run.id,
                            TaskAttempt.state == AttemptState.RUNNING,
                        )
                    )
                )
                if not attempts:
                    continue  # a mapped task's parent: it finishes with its items
                task_run.state = TaskState.QUEUED
                for attempt in attempts:
                    attempt.state = AttemptState.INTERRUPTED
                    attempt.finished_at = utcnow()
                    task_run.attempts -= 1  # an interrupted attempt is not the task's failure
            spec = PipelineSpec.model_validate(run.spec)
            self._pipelines[run_id] = spec.name
            return spec, dict(run.params), run.project_id, run.logical_date, run.max_parallelism

    def _cancel_requested(self, run_id: str) -> bool:
        with self.sessions() as session:
            return bool(
                session.scalar(select(PipelineRun.cancel_requested).where(PipelineRun.id == run_id))
            )

    def _working_set(
        self, session: Session, run_id: str, upstream: dict[str, set[str]]
    ) -> dict[tuple[str, int], TaskRun]:
        """The task runs that may change now, and those whose outputs they read.

        States come from a light query over the whole run; full rows are loaded only for
        the few nodes in play, so a step costs the same in a 10-task and a 5,000-task run.
        """
        states = session.execute(
            select(TaskRun.node_id, TaskRun.map_index, TaskRun.state).where(
                TaskRun.run_id == run_id
            )
        ).all()
        parent_state = {node: TaskState(state) for node, index, state in states if index == PARENT}
        in_play: set[str] = set()
        for node, index, state in states:
            current = TaskState(state)
            waiting = index == PARENT and current is TaskState.PENDING
            ready = waiting and all(parent_state[up].finished for up in upstream[node])
            mapping = index == PARENT and current is TaskState.RUNNING
            if ready or mapping or current is TaskState.QUEUED:
                in_play.add(node)
        needed = in_play | {up for node in in_play for up in upstream[node]}
        if not needed:
            return {}
        rows = session.scalars(
            select(TaskRun).where(TaskRun.run_id == run_id, TaskRun.node_id.in_(sorted(needed)))
        )
        return {(row.node_id, row.map_index): row for row in rows}

    def _advance(
        self,
        session: Session,
        runs: dict[tuple[str, int], TaskRun],
        order: list[NodeSpec],
        upstream_ids: dict[str, set[str]],
        params: dict[str, Any],
    ) -> None:
        """Decide what became ready, skipped or failed, and finish mapped parents."""
        for node in order:
            parent = runs.get((node.id, PARENT))
            if parent is None:
                continue  # not in play this step
            state = TaskState(parent.state)
            if state is TaskState.RUNNING and node.map_over is not None:
                self._finish_mapped(node, parent, runs)
            if state is not TaskState.PENDING:
                continue
            upstream = [TaskState(runs[(up, PARENT)].state) for up in upstream_ids[node.id]]
            if not all(s.finished for s in upstream):
                continue
            skipped = any(s is TaskState.SKIPPED for s in upstream)
            try:
                if any(s in _FAILED_UPSTREAM for s in upstream):
                    self._settle(parent, TaskState.UPSTREAM_FAILED)
                elif skipped or not all(self._holds(c, runs, params) for c in node.conditions):
                    self._settle(parent, TaskState.SKIPPED)
                elif node.map_over is not None:
                    self._expand(session, node, parent, runs, params, node.map_over)
                else:
                    parent.state = TaskState.QUEUED
            except Exception as exc:  # a bad condition or map input fails this task only
                self._fail(parent, exc)

    def _fail(self, task_run: TaskRun, exc: Exception) -> None:
        """Fail a task for a reason found by the engine (not by running it)."""
        task_run.error = {
            "kind": "invalid",
            "source": "engine",
            "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "message": getattr(exc, "message", None) or str(exc),
        }
        self._settle(task_run, TaskState.FAILED)

    def _settle(self, task_run: TaskRun, state: TaskState) -> None:
        task_run.state = state
        task_run.finished_at = utcnow()
        pipeline = self._pipelines.get(task_run.run_id, "unknown")
        self.metrics.task_runs.labels(pipeline, task_run.node_id, state.value).inc()

    def _holds(
        self, condition: Condition, runs: dict[tuple[str, int], TaskRun], params: dict[str, Any]
    ) -> bool:
        value = self._value(self._resolve(condition.value, runs, params))
        return bool(value) if condition.truthy else bool(value == condition.equals)

    def _value(self, resolved: dict[str, Any]) -> Any:
        if "value" in resolved:
            return resolved["value"]
        if "ref" in resolved and resolved["ref"]["kind"] == "json":
            return self.store.get_json(ArtifactRef.model_validate(resolved["ref"]))
        raise PipelineDefinitionError(
            "conditions and mapped lists must be JSON values (a table cannot be one)"
        )

    def _resolve(
        self, value: Input, runs: dict[tuple[str, int], TaskRun], params: dict[str, Any]
    ) -> dict[str, Any]:
        if isinstance(value, LiteralInput):
            return {"value": value.value}
        if isinstance(value, ParamInput):
            return {"value": params.get(value.name)}
        if isinstance(value, OutputInput):
            output = runs[(value.node, PARENT)].output
            if output is None:
                raise PipelineDefinitionError(f"task {value.node!r} has no output")
            return dict(output)
        if isinstance(value, CollectionInput):
            resolved = {k: self._resolve(v, runs, params) for k, v in value.items.items()}
            if value.shape == "list":
                return {"items": list(resolved.values())}
            return {"dict": resolved}
        raise TypeError(f"unknown input {value!r}")

    def _inputs(
        self, node: NodeSpec, runs: dict[tuple[str, int], TaskRun], params: dict[str, Any]
    ) -> dict[str, dict[str, Any]]:
        return {name: self._resolve(value, runs, params) for name, value in node.inputs.items()}

    def _expand(
        self,
        session: Session,
        node: NodeSpec,
        parent: TaskRun,
        runs: dict[tuple[str, int], TaskRun],
        params: dict[str, Any],
        map_over: str,
    ) -> None:
        """Create one queued task run per item; the parent runs until they all finish."""
        items = self._map_items(self._resolve(node.inputs[map_over], runs, params))
        parent.state = TaskState.RUNNING
        parent.started_at = utcnow()
        for index in range(len(items)):
            if (node.id, index) not in runs:
                child = task_run_for(parent.run_id, node, index, TaskState.QUEUED)
                session.add(child)
                runs[(node.id, index)] = child

    def _map_items(self, over: dict[str, Any]) -> list[dict[str, Any]]:
        if "items" in over:
            return list(over["items"])
        values = self._value(over)
        if not isinstance(values, list):
            raise PipelineDefinitionError(
                f"a mapped task needs a list to map over, not a {type(values).__name__}"
            )
        return [{"value": value} for value in values]

    def _finish_mapped(
        self, node: NodeSpec, parent: TaskRun, runs: dict[tuple[str, int], TaskRun]
    ) -> None:
        children = [
            tr
            for (node_id, index), tr in sorted(runs.items())
            if node_id == node.id and index != PARENT
        ]
        if not all(TaskState(child.state).finished for child in children):
            return
        failed = sum(1 for child in children if not TaskState(child.state).produced_output)
        if failed:
            parent.error = {"message": f"{failed} of {len(children)} mapped items failed"}
            self._settle(parent, TaskState.FAILED)
            return
        parent.output = {"items": [child.output for child in children]}
        self._settle(parent, TaskState.SUCCEEDED)

    def _dispatch(
        self,
        session: Session,
        runs: dict[tuple[str, int], TaskRun],
        run_id: str,
        spec: PipelineSpec,
        project_id: str,
        params: dict[str, Any],
        logical_date: datetime | None,
        max_parallel: int | None,
        running: dict[Future[Outcome], _Running],
    ) -> None:
        nodes = {node.id: node for node in spec.nodes}
        now = utcnow()
        queued = sorted(
            (tr for tr in runs.values() if tr.state == TaskState.QUEUED),
            key=lambda tr: (tr.next_attempt_at or now, tr.id),
        )
        due = [tr for tr in queued if tr.next_attempt_at is None or tr.next_attempt_at <= now]
        slot_limits, pool_usage = self._pool_usage(
            session, {nodes[tr.node_id].options.pool for tr in due}
        )
        mapped_items: dict[str, list[dict[str, Any]]] = {}
        for task_run in queued:
            if max_parallel is not None and len(running) >= max_parallel:
                break
            if task_run.next_attempt_at is not None and task_run.next_attempt_at > now:
                continue
            node = nodes[task_run.node_id]
            pool_name = node.options.pool
            if pool_name is not None:
                limit = slot_limits.get(pool_name)
                if limit is None or node.options.pool_slots > limit:
                    self._fail(
                        task_run,
                        PipelineDefinitionError(
                            f"pool {pool_name!r} is gone or has fewer than the "
                            f"{node.options.pool_slots} slots task {node.id!r} needs"
                        ),
                    )
                    continue
                if pool_usage.get(pool_name, 0) + node.options.pool_slots > limit:
                    continue
            try:
                inputs = self._inputs(node, runs, params)
                if task_run.map_index != PARENT and node.map_over is not None:
                    # One read of the mapped list per step, not one per item dispatched.
                    if node.id not in mapped_items:
                        mapped_items[node.id] = self._map_items(inputs[node.map_over])
                    inputs[node.map_over] = mapped_items[node.id][task_run.map_index]
                import_path = _import_path(spec, node)
                key = (
                    self.cache.key(node, inputs, import_path, params, logical_date)
                    if node.options.cache
                    else None
                )
                if key is not None and self._reuse(session, project_id, task_run, key):
                    continue
                env = self.secrets(project_id, node.options.secrets)
            except Exception as exc:  # unusable inputs or secrets fail this task only
                self._fail(task_run, exc)
                continue
            task_run.state = TaskState.RUNNING
            task_run.attempts += 1
            task_run.started_at = task_run.started_at or utcnow()
            task_run.cache_key = key
            # Attempt numbers never repeat, across interruptions and retried runs;
            # ``attempts`` counts only those that spend the retry budget.
            number = 1 + (
                session.scalar(
                    select(func.max(TaskAttempt.number)).where(
                        TaskAttempt.task_run_id == task_run.id
                    )
                )
                or 0
            )
            log_path = self._log_path(run_id, task_run, number)
            attempt = TaskAttempt(
                task_run_id=task_run.id,
                number=number,
                state=AttemptState.RUNNING,
                log_path=str(log_path),
            )
            session.add(attempt)
            session.flush()
            item = _Running(task_run.id, attempt.id, node, task_run.map_index, key, inputs)
            request = {
                "task": node.task,
                "task_name": node.task_name,
                "import_path": list(import_path),
                "inputs": inputs,
                "artifacts_url": self.settings.artifacts_url,
                "run_id": run_id,
                "attempt": number,
                "params": params,
                "logical_date": logical_date.isoformat() if logical_date else None,
                "map_index": task_run.map_index,
            }
            job = Job(
                target=ENTRYPOINT,
                kwargs={"request": request},
                log_path=str(log_path),
                env=env,
                memory_limit=node.options.resources.memory,
                timeout=node.options.timeout.total_seconds() if node.options.timeout else None,
            )
            if pool_name is not None:
                pool_usage[pool_name] = pool_usage.get(pool_name, 0) + node.options.pool_slots
            running[self.pool.submit(job, cancel=item.cancel)] = item
        self._report_queue(session)

    def _pool_usage(
        self, session: Session, wanted: set[str | None]
    ) -> tuple[dict[str, int], dict[str, int]]:
        """Slot limits and slots in use of the pools queued tasks want, across every run
        and engine sharing the store.

        Each pool's row is locked first (in name order, so engines never deadlock), so two
        engines never both fill the last slot: the second counts the first's task.
        """
        names = sorted(name for name in wanted if name is not None)
        if not names:
            return {}, {}
        for name in names:
            session.execute(update(Pool).where(Pool.name == name).values(slots=Pool.slots))
        limits = {
            pool.name: pool.slots
            for pool in session.scalars(select(Pool).where(Pool.name.in_(names)))
        }
        usage = session.execute(
            select(TaskRun.pool, func.sum(TaskRun.pool_slots))
            .where(TaskRun.state == TaskState.RUNNING, TaskRun.pool.in_(names))
            .group_by(TaskRun.pool)
        ).all()
        return limits, {str(pool): int(slots or 0) for pool, slots in usage}

    def _report_queue(self, session: Session) -> None:
        """Queued task runs per pool across the store, at most once a second."""
        if time.monotonic() - self._queue_reported < 1.0:
            return
        self._queue_reported = time.monotonic()
        waiting = {
            str(pool or "default"): int(count)
            for pool, count in session.execute(
                select(TaskRun.pool, func.count())
                .where(TaskRun.state == TaskState.QUEUED)
                .group_by(TaskRun.pool)
            ).all()
        }
        for pool in self._queue_labels | waiting.keys():
            self.metrics.queue_depth.labels(pool).set(waiting.get(pool, 0))
        self._queue_labels |= waiting.keys()

    def _log_path(self, run_id: str, task_run: TaskRun, number: int) -> Path:
        suffix = "" if task_run.map_index == PARENT else f"[{task_run.map_index}]"
        folder = self.settings.logs_dir / run_id / f"{task_run.node_id}{suffix}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"attempt-{number}.log"

    def _reuse(self, session: Session, project_id: str, task_run: TaskRun, key: str) -> bool:
        output = self.cache.lookup(session, project_id, key)
        if output is None:
            return False
        task_run.cache_key = key
        task_run.output = output
        self._settle(task_run, TaskState.CACHED)
        return True

    def _record(self, run_id: str, project_id: str, item: _Running, outcome: Outcome) -> None:
        pipeline = self._pipelines.get(run_id, "unknown")
        self.metrics.task_duration.labels(pipeline, item.node.id).observe(outcome.seconds)
        ended = time.time_ns()
        span = self.tracer.start_span(
            f"task {item.node.id}",
            start_time=ended - int(outcome.seconds * 1e9),
            attributes={
                "modelyard.task": item.node.id,
                "modelyard.map_index": item.map_index,
                "modelyard.outcome": outcome.kind.value,
            },
        )
        span.end(end_time=ended)
        with transaction(self.sessions) as session:
            task_run = session.get(TaskRun, item.task_run_id)
            attempt = session.get(TaskAttempt, item.attempt_id)
            if task_run is None or attempt is None:
                return
            attempt.finished_at = utcnow()
            attempt.worker_pid = outcome.worker_pid
            attempt.exit_code = outcome.exit_code
            attempt.peak_memory_bytes = outcome.peak_memory_bytes
            attempt.log_ref = self._keep_log(attempt.log_path)
            if outcome.ok:
                output = {"ref": outcome.value}
                attempt.state = AttemptState.SUCCEEDED
                task_run.output = output
                task_run.error = None
                self._settle(task_run, TaskState.SUCCEEDED)
                self._link(session, project_id, run_id, task_run.id, item, output)
                if item.cache_key is not None:
                    self.cache.remember(session, project_id, item.cache_key, output, task_run.id)
                return
            error = error_record(outcome)
            attempt.state = ATTEMPT_STATE[outcome.kind]
            attempt.error = error
            task_run.error = error
            if outcome.kind is OutcomeKind.CANCELLED:
                self._settle(task_run, TaskState.CANCELLED)
                return
            policy = item.node.options.retry
            if task_run.attempts <= policy.retries and retryable(policy, outcome):
                task_run.state = TaskState.QUEUED
                task_run.next_attempt_at = utcnow() + backoff(policy, task_run.attempts)
                return
            self._settle(task_run, TaskState.FAILED)

    def _keep_log(self, log_path: str | None) -> dict[str, Any] | None:
        """Copy an attempt's log into the artifact store, where any machine can read it."""
        if not log_path or not Path(log_path).is_file():
            return None
        try:
            return self.store.put_file(log_path, media_type="text/plain").model_dump(mode="json")
        except OSError:
            logger.warning("the log %s could not be stored", log_path, exc_info=True)
            return None

    def _link(
        self,
        session: Session,
        project_id: str,
        run_id: str,
        task_run_id: str,
        item: _Running,
        output: dict[str, Any],
    ) -> None:
        consumed = {d for value in item.inputs.values() for d in digests_in(value)}
        for digest, direction in [
            *((d, "consumed") for d in sorted(consumed)),
            *((d, "produced") for d in digests_in(output)),
        ]:
            session.add(
                ArtifactLink(
                    project_id=project_id,
                    digest=digest,
                    run_id=run_id,
                    task_run_id=task_run_id,
                    direction=direction,
                )
            )

    def _settled(self, run_id: str) -> bool:
        with self.sessions() as session:
            states = session.scalars(select(TaskRun.state).where(TaskRun.run_id == run_id))
            return all(TaskState(state).finished for state in states)

    def _finish(self, run_id: str, *, cancelled: bool = False) -> RunState:
        with transaction(self.sessions) as session:
            run = session.get(PipelineRun, run_id)
            if run is None:
                raise RunNotFoundError(f"run {run_id!r} does not exist")
            task_runs = list(session.scalars(select(TaskRun).where(TaskRun.run_id == run_id)))
            if cancelled:
                for task_run in task_runs:
                    if not TaskState(task_run.state).finished:
                        self._settle(task_run, TaskState.CANCELLED)
                state = RunState.CANCELLED
            elif any(TaskState(tr.state) in _FAILED_UPSTREAM for tr in task_runs):
                failed = sorted(tr.node_id for tr in task_runs if tr.state == TaskState.FAILED)
                run.error = {"failed_tasks": failed}
                state = RunState.FAILED
            else:
                state = RunState.SUCCEEDED
            run.state = state
            run.finished_at = utcnow()
            return state


def _import_path(spec: PipelineSpec, node: NodeSpec) -> tuple[str, ...]:
    """Pipeline files are not importable by module name: point the worker at the file."""
    module_name = node.task.partition(":")[0]
    if not module_name.startswith(USER_MODULE_PREFIX):
        return ()
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None) or spec.source.rpartition(":")[0]
    return (file,) if file else ()
