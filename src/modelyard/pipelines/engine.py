"""The run engine: drives a pipeline run to its end, one persisted transition at a time.

Every state change is committed before the engine acts on it, so the engine can be
killed at any moment and, run again, continues the run: finished tasks keep their
outputs and are never repeated; an attempt that was running is recorded as interrupted
and started again.

The engine holds the run's lease while it drives it, so it is the only writer of the
run's task runs: it keeps their states in memory (written through to the store) and
each step reads only the few rows in play, whatever the size of the run.

Tasks run on their run's runtime (the local warm worker pool, Ray, or Kubernetes Jobs)
through one entrypoint, ``modelyard.pipelines.execute:run_attempt``; values travel
between tasks as artifact references, so the engine never holds a task's data.
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
from typing import Any, NamedTuple

from opentelemetry import trace
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelyard.artifacts import ArtifactStore
from modelyard.errors import InvalidInputError
from modelyard.monitoring.metrics import PipelineMetrics
from modelyard.pipelines import pools
from modelyard.pipelines.cache import TaskCache
from modelyard.pipelines.errors import PipelineDefinitionError
from modelyard.pipelines.graph import topological_order
from modelyard.pipelines.inputs import InputResolver
from modelyard.pipelines.loader import USER_MODULE_PREFIX
from modelyard.pipelines.progress import Key, RunProgress
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
from modelyard.runtimes import Runtime, check_runtime
from modelyard.runtimes.jobs import Job, Outcome, OutcomeKind
from modelyard.specs.pipelines import NodeSpec, PipelineSpec
from modelyard.specs.runs import AttemptState, RunState, TaskState
from modelyard.store.db import transaction
from modelyard.store.ids import new_id
from modelyard.store.models import ArtifactLink, PipelineRun, Project, TaskAttempt, TaskRun
from modelyard.training import tracking
from modelyard.training.tracking import TrackingConfig

logger = logging.getLogger(__name__)

ENTRYPOINT = "modelyard.pipelines.execute:run_attempt"
_FAILED_UPSTREAM = {TaskState.FAILED, TaskState.UPSTREAM_FAILED, TaskState.CANCELLED}
_CANCEL_CHECK_SECONDS = 0.1


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Running:
    task_run: TaskRun  # as committed when the attempt started
    attempt: TaskAttempt
    node: NodeSpec
    map_index: int
    cache_key: str | None
    inputs: dict[str, Any]
    cancel: threading.Event = field(default_factory=threading.Event)


class _Ended(NamedTuple):
    task_run: TaskRun
    attempt: TaskAttempt
    item: _Running
    outcome: Outcome


@dataclass
class _Run:
    """A run being driven: what every step needs, loaded once, and what is in flight."""

    id: str
    spec: PipelineSpec
    params: dict[str, Any]
    project_id: str
    project: str  # its name
    logical_date: datetime | None
    max_parallel: int | None
    progress: RunProgress  # its task states, written through to the store
    runtime_name: str  # where its tasks run
    nodes: dict[str, NodeSpec] = field(init=False)
    position: dict[str, int] = field(init=False)  # in topological order
    runtime: Runtime | None = None  # opened when the run starts
    running: dict[Future[Outcome], _Running] = field(default_factory=dict)
    ended: list[tuple[_Running, Outcome]] = field(default_factory=list)  # not yet recorded

    def __post_init__(self) -> None:
        self.nodes = {node.id: node for node in self.spec.nodes}
        self.position = {node.id: i for i, node in enumerate(topological_order(self.spec))}


@dataclass(frozen=True)
class EngineSettings:
    """How the engine runs tasks.

    Args:
        artifacts_url: Where task outputs are stored.
        logs_dir: Where per-attempt logs are written.
        poll_seconds: How often the engine looks for cancellation and due retries.
        lease: How long a run stays ours without renewal (renewed every third of it).
        tracking: Where tracked tasks' MLflow runs go; None runs them untracked.
    """

    artifacts_url: str
    logs_dir: Path
    poll_seconds: float = 0.05
    lease: timedelta = DEFAULT_LEASE
    tracking: TrackingConfig | None = None


class _Stopped(Exception):
    """The engine was asked to stop, or lost the run to another engine."""


class RunEngine:
    """Executes pipeline runs, each on its runtime; one engine may drive several runs at
    once (one thread each).

    A run's tasks run on the runtime the run was created with: ``pool`` when the names
    match, else one ``open_runtime`` opens on first use, kept for the runs that follow
    and closed by :meth:`close`.

    Args:
        sessions: The metadata store.
        pool: The default runtime (the local worker pool), owned by the caller.
        store: The artifact store (the same one the workers use).
        settings: Engine settings.
        secrets: Looks up a project's secret values by name, for injection.
        metrics: Where task counts, durations and queue depths are recorded.
        tracer_provider: Where run and attempt spans go (default: the global provider).
        open_runtime: Opens a runtime by name (``"ray"``); None: runs on other runtimes
            than ``pool`` fail.
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
        open_runtime: Callable[[str], Runtime] | None = None,
    ) -> None:
        self.metrics = metrics or PipelineMetrics()
        self.tracer = trace.get_tracer("modelyard.pipelines", tracer_provider=tracer_provider)
        self.sessions = sessions
        self.pool = pool
        self.store = store
        self.settings = settings
        self.secrets = secrets or (lambda _project, _names: {})
        self.cache = TaskCache(store)
        self.inputs = InputResolver(store)
        self.owner = new_owner()
        self._queue_labels: set[str] = set()
        self._queue_reported = 0.0
        self._open_runtime = open_runtime
        self._runtimes: dict[str, Runtime] = {}
        self._runtimes_lock = threading.Lock()

    # -- runtimes -----------------------------------------------------------------------

    def runtime(self, name: str) -> Runtime:
        """The runtime called ``name``, opened on first use.

        Raises:
            InvalidInputError: an unknown runtime, or one that cannot be opened here.
        """
        if name == self.pool.name:
            return self.pool
        with self._runtimes_lock:
            opened = self._runtimes.get(name)
            if opened is None:
                if self._open_runtime is None:
                    raise InvalidInputError(
                        f"this engine runs tasks on the {self.pool.name} runtime only, "
                        f"not on {name!r}",
                        code="runtime/unavailable",
                        details={"runtime": name},
                    )
                opened = self._runtimes[name] = self._open_runtime(name)
            return opened

    def close(self) -> None:
        """Close the runtimes this engine opened (``pool`` is its owner's to close)."""
        with self._runtimes_lock:
            opened, self._runtimes = list(self._runtimes.values()), {}
        for runtime in opened:
            runtime.close()

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
        runtime: str | None = None,
    ) -> str:
        """Persist a queued run, held by this engine so no other picks it up first;
        returns the run id. Its tasks run on ``runtime`` (default: the engine's pool).

        Raises:
            PipelineDefinitionError: a cycle, or a node names a pool that does not exist.
            InvalidInputError: no runtime of that name is registered.
        """
        new = NewRun(
            logical_date=logical_date,
            trigger=trigger,
            created_by=created_by,
            max_parallelism=max_parallelism,
            owner=self.owner,
            lease=self.settings.lease,
            runtime=self.pool.name if runtime is None else check_runtime(runtime),
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
        run = self._start(run_id)
        try:
            run.runtime = self.runtime(run.runtime_name)
        except Exception as exc:  # not installed, unreachable: nothing of the run can run
            logger.error("run %s: the %s runtime cannot be used: %s", run_id, run.runtime_name, exc)
            return self._unrunnable(run, exc)
        lost = False
        try:
            return self._loop(run, on_change or (lambda _run_id: None), stop)
        except _Stopped as stopped:
            lost = stopped.args == ("lost",)
            return self._state(run_id)
        finally:
            # After a stop or an unexpected error: keep what finished, stop what runs and
            # put it back in the queue, as a restarted engine would after a crash. A run
            # another engine took over is theirs to record.
            for item in run.running.values():
                item.cancel.set()
            if not lost:
                self._record_ended(run)
            for future, item in run.running.items():
                future.result()
                if not lost:
                    self._interrupt(item)

    def _loop(self, run: _Run, notify: Callable[[str], None], stop: threading.Event) -> RunState:
        renew_every = self.settings.lease.total_seconds() / 3
        renewed = checked = time.monotonic()
        cancelling = self._cancel_requested(run.id)
        while True:
            if stop.is_set():
                raise _Stopped("stopped")
            now = time.monotonic()
            if now - renewed > renew_every:
                if not renew(self.sessions, run.id, self.owner, self.settings.lease):
                    logger.warning("run %s was taken over by another engine", run.id)
                    raise _Stopped("lost")
                renewed = now
            if not cancelling and now - checked > _CANCEL_CHECK_SECONDS:
                cancelling, checked = self._cancel_requested(run.id), now
            self._step(run, cancelling)
            notify(run.id)
            if not run.running:
                if cancelling:
                    return self._finish(run, cancelled=True)
                if run.progress.settled:
                    return self._finish(run)
                stop.wait(self.settings.poll_seconds)  # a retry's backoff: nothing to wait on
                continue
            done, _ = wait(
                list(run.running), timeout=self.settings.poll_seconds, return_when=FIRST_COMPLETED
            )
            run.ended.extend((run.running.pop(future), future.result()) for future in done)

    def _step(self, run: _Run, cancelling: bool) -> None:
        """One transaction: record what ended, then (unless cancelling) decide what is
        ready and dispatch it."""
        with transaction(self.sessions) as session:
            # The states in memory follow the store's within the transaction: should it
            # fail, the engine stops and a restart reloads them.
            recorded = self._record(session, run)
            run.progress.update(ended.task_run for ended in recorded)
            if cancelling:
                for item in run.running.values():
                    item.cancel.set()
            else:
                with session.no_autoflush:  # rows already here are the ones this step changed
                    rows = self._working_set(session, run)
                self._advance(session, run, rows)
                self._dispatch(session, run, rows)
                run.progress.update(rows.values())
                self._report_queue(session)
            self._bookkeep(session, run, recorded)
        run.ended.clear()

    def _record_ended(self, run: _Run) -> None:
        if not run.ended:
            return
        with transaction(self.sessions) as session:
            self._bookkeep(session, run, self._record(session, run))
        run.ended.clear()

    def _interrupt(self, item: _Running) -> None:
        with transaction(self.sessions) as session:
            task_run = session.get(TaskRun, item.task_run.id)
            attempt = session.get(TaskAttempt, item.attempt.id)
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

    def _start(self, run_id: str) -> _Run:
        with transaction(self.sessions) as session:
            run = session.get(PipelineRun, run_id)
            if run is None:
                raise RunNotFoundError(f"run {run_id!r} does not exist")
            if run.state == RunState.QUEUED:
                run.state = RunState.RUNNING
                run.started_at = run.started_at or utcnow()
            task_runs = list(session.scalars(select(TaskRun).where(TaskRun.run_id == run_id)))
            # Attempts a previous engine left running were lost with it: run them again.
            stale = {tr.id: tr for tr in task_runs if tr.state == TaskState.RUNNING}
            attempts = session.scalars(
                select(TaskAttempt).where(
                    TaskAttempt.task_run_id.in_(list(stale)),
                    TaskAttempt.state == AttemptState.RUNNING,
                )
            )
            for attempt in attempts:  # a mapped task's parent has none: it waits for items
                task_run = stale[attempt.task_run_id]
                task_run.state = TaskState.QUEUED
                attempt.state = AttemptState.INTERRUPTED
                attempt.finished_at = utcnow()
                task_run.attempts -= 1  # an interrupted attempt is not the task's failure
            spec = PipelineSpec.model_validate(run.spec)
            return _Run(
                id=run_id,
                spec=spec,
                params=dict(run.params),
                project_id=run.project_id,
                project=_project_name(session, run.project_id),
                logical_date=run.logical_date,
                max_parallel=run.max_parallelism,
                progress=RunProgress(spec, task_runs),
                runtime_name=run.runtime,
            )

    def fail_unfinished(self, run_id: str, exc: Exception) -> RunState:
        """Fail what is unfinished of a run that was driven elsewhere and left unfinished
        (a RayJob whose driver failed or never started), and so the run; a finished run
        is left as it is."""
        state = self._state(run_id)
        return state if state.finished else self._unrunnable(self._start(run_id), exc)

    def _unrunnable(self, run: _Run, exc: Exception) -> RunState:
        """Fail the unfinished tasks of a run whose runtime cannot be opened, and the run."""
        with transaction(self.sessions) as session:
            for task_run in session.scalars(select(TaskRun).where(TaskRun.run_id == run.id)):
                if not TaskState(task_run.state).finished:
                    self._fail(run, task_run, exc)
        return self._finish(run)

    def _cancel_requested(self, run_id: str) -> bool:
        with self.sessions() as session:
            return bool(
                session.scalar(select(PipelineRun.cancel_requested).where(PipelineRun.id == run_id))
            )

    # -- one step -------------------------------------------------------------------------

    def _working_set(self, session: Session, run: _Run) -> dict[Key, TaskRun]:
        """The task runs that may change now, and those whose outputs they read."""
        in_play = run.progress.in_play()
        needed = in_play | {up for node in in_play for up in run.progress.upstream[node]}
        if not needed:
            return {}
        rows = session.scalars(
            select(TaskRun).where(TaskRun.run_id == run.id, TaskRun.node_id.in_(sorted(needed)))
        )
        return {(row.node_id, row.map_index): row for row in rows}

    def _advance(self, session: Session, run: _Run, rows: dict[Key, TaskRun]) -> None:
        """Decide what became ready, skipped or failed, and finish mapped parents."""
        in_play = sorted({node for node, _ in rows}, key=run.position.__getitem__)
        for node in (run.nodes[node_id] for node_id in in_play):
            parent = rows[(node.id, PARENT)]
            state = TaskState(parent.state)
            if state is TaskState.RUNNING and node.map_over is not None:
                self._finish_mapped(run, node, parent, rows)
            if state is not TaskState.PENDING:
                continue
            upstream = [
                TaskState(rows[(up, PARENT)].state) for up in run.progress.upstream[node.id]
            ]
            if not all(s.finished for s in upstream):
                continue
            skipped = any(s is TaskState.SKIPPED for s in upstream)
            try:
                if any(s in _FAILED_UPSTREAM for s in upstream):
                    self._settle(run, parent, TaskState.UPSTREAM_FAILED)
                elif skipped or not all(
                    self.inputs.holds(c, rows, run.params) for c in node.conditions
                ):
                    self._settle(run, parent, TaskState.SKIPPED)
                elif node.map_over is not None:
                    self._expand(session, run, node, parent, rows)
                else:
                    parent.state = TaskState.QUEUED
            except Exception as exc:  # a bad condition or map input fails this task only
                self._fail(run, parent, exc)

    def _fail(self, run: _Run, task_run: TaskRun, exc: Exception) -> None:
        """Fail a task for a reason found by the engine (not by running it)."""
        task_run.error = {
            "kind": "invalid",
            "source": "engine",
            "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "message": getattr(exc, "message", None) or str(exc),
        }
        self._settle(run, task_run, TaskState.FAILED)

    def _settle(self, run: _Run, task_run: TaskRun, state: TaskState) -> None:
        task_run.state = state
        task_run.finished_at = utcnow()
        self.metrics.task_runs.labels(run.spec.name, task_run.node_id, state.value).inc()

    def _expand(
        self, session: Session, run: _Run, node: NodeSpec, parent: TaskRun, rows: dict[Key, TaskRun]
    ) -> None:
        """Create one queued task run per item; the parent runs until they all finish."""
        assert node.map_over is not None
        over = self.inputs.resolve(node.inputs[node.map_over], rows, run.params)
        items = self.inputs.map_items(over)
        parent.state = TaskState.RUNNING
        parent.started_at = utcnow()
        for index in range(len(items)):
            if (node.id, index) not in rows:
                child = task_run_for(parent.run_id, node, index, TaskState.QUEUED)
                session.add(child)
                rows[(node.id, index)] = child

    def _finish_mapped(
        self, run: _Run, node: NodeSpec, parent: TaskRun, rows: dict[Key, TaskRun]
    ) -> None:
        children = [
            tr
            for (node_id, index), tr in sorted(rows.items())
            if node_id == node.id and index != PARENT
        ]
        if not all(TaskState(child.state).finished for child in children):
            return
        failed = sum(1 for child in children if not TaskState(child.state).produced_output)
        if failed:
            parent.error = {"message": f"{failed} of {len(children)} mapped items failed"}
            self._settle(run, parent, TaskState.FAILED)
            return
        parent.output = {"items": [child.output for child in children]}
        self._settle(run, parent, TaskState.SUCCEEDED)

    def _dispatch(self, session: Session, run: _Run, rows: dict[Key, TaskRun]) -> None:
        """Start attempts of the queued task runs there is room for.

        Jobs are submitted at once: the step's writes are flushed and committed while the
        first task runs. Should the commit fail, the engine stops and these attempts are
        interrupted like any others (their rows never existed); a task may then run again,
        as after any crash.
        """
        now = utcnow()
        queued = sorted(
            (tr for tr in rows.values() if tr.state == TaskState.QUEUED),
            key=lambda tr: (tr.next_attempt_at or now, tr.id),
        )
        due = [tr for tr in queued if tr.next_attempt_at is None or tr.next_attempt_at <= now]
        limits, in_use = pools.claim_view(
            session, (run.nodes[tr.node_id].options.pool for tr in due)
        )
        mapped_items: dict[str, list[dict[str, Any]]] = {}
        for task_run in due:
            if run.max_parallel is not None and len(run.running) >= run.max_parallel:
                break
            node = run.nodes[task_run.node_id]
            pool, slots = node.options.pool, node.options.pool_slots
            if pool is not None:
                if pool not in limits or slots > limits[pool]:
                    self._fail(
                        run,
                        task_run,
                        PipelineDefinitionError(
                            f"pool {pool!r} is gone or has fewer than the {slots} slots "
                            f"task {node.id!r} needs"
                        ),
                    )
                    continue
                if in_use.get(pool, 0) + slots > limits[pool]:
                    continue
            try:
                inputs = self.inputs.inputs(node, rows, run.params)
                if task_run.map_index != PARENT and node.map_over is not None:
                    # One read of the mapped list per step, not one per item dispatched.
                    if node.id not in mapped_items:
                        mapped_items[node.id] = self.inputs.map_items(inputs[node.map_over])
                    inputs[node.map_over] = mapped_items[node.id][task_run.map_index]
                import_path = _import_path(run.spec, node)
                key = (
                    self.cache.key(node, inputs, import_path, run.params, run.logical_date)
                    if node.options.cache
                    else None
                )
                if key is not None and self._reuse(session, run, task_run, key):
                    continue
                env = self.secrets(run.project_id, node.options.secrets)
            except Exception as exc:  # unusable inputs or secrets fail this task only
                self._fail(run, task_run, exc)
                continue
            job, item = self._start_attempt(
                session, run, task_run, node, inputs, import_path, key, env
            )
            if pool is not None:
                in_use[pool] = in_use.get(pool, 0) + slots
            assert run.runtime is not None  # opened before the first step
            run.running[run.runtime.submit(job, cancel=item.cancel)] = item

    def _start_attempt(
        self,
        session: Session,
        run: _Run,
        task_run: TaskRun,
        node: NodeSpec,
        inputs: dict[str, Any],
        import_path: tuple[str, ...],
        key: str | None,
        env: dict[str, str],
    ) -> tuple[Job, _Running]:
        task_run.state = TaskState.RUNNING
        task_run.attempts += 1
        task_run.started_at = task_run.started_at or utcnow()
        task_run.cache_key = key
        task_run.last_attempt += 1
        number = task_run.last_attempt
        log_path = self._log_path(run.id, task_run, number)
        attempt = TaskAttempt(
            id=new_id(),
            task_run_id=task_run.id,
            number=number,
            state=AttemptState.RUNNING,
            log_path=str(log_path),
        )
        session.add(attempt)
        request = {
            "task": node.task,
            "task_name": node.task_name,
            "import_path": list(import_path),
            "inputs": inputs,
            "artifacts_url": self.settings.artifacts_url,
            "run_id": run.id,
            "attempt": number,
            "params": run.params,
            "logical_date": run.logical_date.isoformat() if run.logical_date else None,
            "map_index": task_run.map_index,
        }
        if node.options.track and self.settings.tracking is not None:
            request["tracking"] = _tracking_request(self.settings.tracking, run, node, inputs)
        job = Job(
            target=ENTRYPOINT,
            kwargs={"request": request},
            log_path=str(log_path),
            env=env,
            memory_limit=node.options.resources.memory,
            timeout=node.options.timeout.total_seconds() if node.options.timeout else None,
            resources=node.options.resources,
            secret_env=tuple(sorted(env)),
            image=node.options.env.image,
            labels={
                "project": run.project,
                "run": run.id,
                "task": node.id
                if task_run.map_index == PARENT
                else f"{node.id}-{task_run.map_index}",
                "attempt": str(number),
            },
        )
        return job, _Running(task_run, attempt, node, task_run.map_index, key, inputs)

    def _report_queue(self, session: Session) -> None:
        """Queued task runs per pool across the store, at most once a second."""
        if time.monotonic() - self._queue_reported < 1.0:
            return
        self._queue_reported = time.monotonic()
        waiting = pools.queued_per_pool(session)
        for pool in self._queue_labels | waiting.keys():
            self.metrics.queue_depth.labels(pool).set(waiting.get(pool, 0))
        self._queue_labels |= waiting.keys()

    def _log_path(self, run_id: str, task_run: TaskRun, number: int) -> Path:
        suffix = "" if task_run.map_index == PARENT else f"[{task_run.map_index}]"
        folder = self.settings.logs_dir / run_id / f"{task_run.node_id}{suffix}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"attempt-{number}.log"

    def _reuse(self, session: Session, run: _Run, task_run: TaskRun, key: str) -> bool:
        output = self.cache.lookup(session, run.project_id, key)
        if output is None:
            return False
        task_run.cache_key = key
        task_run.output = output
        self._settle(run, task_run, TaskState.CACHED)
        return True

    # -- outcomes ---------------------------------------------------------------------

    def _record(self, session: Session, run: _Run) -> list[_Ended]:
        """Decide what the attempts that ended mean for their tasks: output, retry or
        failure. The attempts' own records are written by :meth:`_bookkeep`, after the
        tasks this makes ready have started."""
        recorded = []
        for item, outcome in run.ended:
            # The rows as this engine last wrote them (it is their only writer while it
            # holds the lease): merged back without reading them again.
            task_run = session.merge(item.task_run, load=False)
            attempt = session.merge(item.attempt, load=False)
            self._decide(run, task_run, item, outcome)
            recorded.append(_Ended(task_run, attempt, item, outcome))
        return recorded

    def _decide(self, run: _Run, task_run: TaskRun, item: _Running, outcome: Outcome) -> None:
        if outcome.ok:
            task_run.output = {"ref": outcome.value}
            task_run.error = None
            self._settle(run, task_run, TaskState.SUCCEEDED)
            return
        task_run.error = error_record(outcome)
        if outcome.kind is OutcomeKind.CANCELLED:
            self._settle(run, task_run, TaskState.CANCELLED)
            return
        policy = item.node.options.retry
        if task_run.attempts <= policy.retries and retryable(policy, outcome):
            task_run.state = TaskState.QUEUED
            task_run.next_attempt_at = utcnow() + backoff(policy, task_run.attempts)
            return
        self._settle(run, task_run, TaskState.FAILED)

    def _bookkeep(self, session: Session, run: _Run, recorded: list[_Ended]) -> None:
        """The attempts' own records: how they ended, their logs, lineage, the cache,
        their metrics and spans."""
        ended_ns = time.time_ns()
        for task_run, attempt, item, outcome in recorded:
            attempt.finished_at = utcnow()
            attempt.worker_pid = outcome.worker_pid
            attempt.exit_code = outcome.exit_code
            attempt.peak_memory_bytes = outcome.peak_memory_bytes
            attempt.log_ref = self._keep_log(attempt.log_path)
            attempt.state = ATTEMPT_STATE[outcome.kind]
            if outcome.ok:
                output = {"ref": outcome.value}
                self._link(session, run, task_run.id, item, output)
                if item.cache_key is not None:
                    self.cache.remember(
                        session, run.project_id, item.cache_key, output, task_run.id
                    )
            else:
                attempt.error = task_run.error
            self.metrics.task_duration.labels(run.spec.name, item.node.id).observe(outcome.seconds)
            span = self.tracer.start_span(
                f"task {item.node.id}",
                start_time=ended_ns - int(outcome.seconds * 1e9),
                attributes={
                    "modelyard.task": item.node.id,
                    "modelyard.map_index": item.map_index,
                    "modelyard.outcome": outcome.kind.value,
                },
            )
            span.end(end_time=ended_ns)

    def _keep_log(self, log_path: str | None) -> dict[str, Any] | None:
        """Copy an attempt's log into the artifact store, where any machine can read it
        (an attempt that printed nothing has no log to keep)."""
        if not log_path:
            return None
        path = Path(log_path)
        if not path.is_file() or path.stat().st_size == 0:
            return None
        try:
            return self.store.put_file(log_path, media_type="text/plain").model_dump(mode="json")
        except OSError:
            logger.warning("the log %s could not be stored", log_path, exc_info=True)
            return None

    def _link(
        self,
        session: Session,
        run: _Run,
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
                    project_id=run.project_id,
                    digest=digest,
                    run_id=run.id,
                    task_run_id=task_run_id,
                    direction=direction,
                )
            )

    def _finish(self, run: _Run, *, cancelled: bool = False) -> RunState:
        with transaction(self.sessions) as session:
            record = session.get(PipelineRun, run.id)
            if record is None:
                raise RunNotFoundError(f"run {run.id!r} does not exist")
            task_runs = list(session.scalars(select(TaskRun).where(TaskRun.run_id == run.id)))
            if cancelled:
                for task_run in task_runs:
                    if not TaskState(task_run.state).finished:
                        self._settle(run, task_run, TaskState.CANCELLED)
                state = RunState.CANCELLED
            elif any(TaskState(tr.state) in _FAILED_UPSTREAM for tr in task_runs):
                failed = sorted(tr.node_id for tr in task_runs if tr.state == TaskState.FAILED)
                record.error = {"failed_tasks": failed}
                state = RunState.FAILED
            else:
                state = RunState.SUCCEEDED
            record.state = state
            record.finished_at = utcnow()
            return state


def _import_path(spec: PipelineSpec, node: NodeSpec) -> tuple[str, ...]:
    """Pipeline files are not importable by module name: point the worker at the file."""
    module_name = node.task.partition(":")[0]
    if not module_name.startswith(USER_MODULE_PREFIX):
        return ()
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None) or spec.source.rpartition(":")[0]
    return (file,) if file else ()


def _project_name(session: Session, project_id: str) -> str:
    project = session.get(Project, project_id)
    return project.name if project is not None else project_id


def _tracking_request(
    config: TrackingConfig, run: _Run, node: NodeSpec, inputs: dict[str, Any]
) -> dict[str, Any]:
    """What a tracked task's worker needs to open its MLflow run."""
    digests = sorted({d for value in inputs.values() for d in digests_in(value)})
    return {
        "tracking_uri": config.tracking_uri,
        "artifact_root": config.artifact_root,
        "project": run.project,
        "tags": {
            tracking.PROJECT: run.project,
            tracking.PIPELINE: run.spec.name,
            tracking.PIPELINE_RUN: run.id,
            tracking.TASK: node.task_name,
            tracking.INPUTS: tracking.inputs_tag(digests),
        },
    }
