"""The worker side of a task attempt: load inputs, call the task, store its output.

Runs inside a warm worker process (``modelyard.runtimes.local``) or, later, a pod or a
Ray worker: every runtime calls this same entrypoint with the same request.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from modelyard.artifacts import ArtifactStore
from modelyard.pipelines.loader import resolve_target
from modelyard.pipelines.values import load_input, store_output


@dataclass(frozen=True)
class TaskContext:
    """What a running task may ask about itself: ``modelyard.pipelines.current_context()``."""

    run_id: str
    task: str
    attempt: int
    params: dict[str, Any]
    logical_date: datetime | None
    map_index: int


_context: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "modelyard_task_context", default=None
)


def current_context() -> TaskContext:
    """The context of the task attempt running now.

    Raises:
        RuntimeError: called outside a running task.
    """
    context = _context.get()
    if context is None:
        raise RuntimeError("current_context() is only available inside a running task")
    return context


class _ContextFilter(logging.Filter):
    """Stamps every record with the attempt it came from."""

    def __init__(self, context: TaskContext) -> None:
        super().__init__()
        self.context = context

    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = self.context.run_id
        record.task = self.context.task
        record.attempt = self.context.attempt
        if self.context.map_index >= 0:
            record.map_index = self.context.map_index
        return True


@contextlib.contextmanager
def _structured_logs(context: TaskContext) -> Iterator[None]:
    """What the task logs (``logging``, INFO and up) goes to the attempt's log as JSON
    lines carrying the run, task and attempt; print() output stays as it is."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.INFO)
    handler.addFilter(_ContextFilter(context))
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "asctime": "time"},
        )
    )
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        handler.flush()
        root.removeHandler(handler)
        root.setLevel(previous)


@lru_cache(maxsize=4)
def _store(url: str) -> ArtifactStore:
    return ArtifactStore(url)


def run_attempt(request: dict[str, Any]) -> dict[str, Any]:
    """Execute one attempt described by ``request`` and return its output reference.

    ``request`` carries ``task`` ("module:qualname"), ``import_path``, ``task_name``,
    ``inputs`` (argument -> resolved input), ``artifacts_url`` and the context fields.
    """
    store = _store(request["artifacts_url"])
    function = resolve_target(request["task"], tuple(request.get("import_path", ())))
    kwargs = {name: load_input(store, value) for name, value in request["inputs"].items()}
    logical_date = request.get("logical_date")
    context = TaskContext(
        run_id=request["run_id"],
        task=request["task_name"],
        attempt=request["attempt"],
        params=request.get("params", {}),
        logical_date=datetime.fromisoformat(logical_date) if logical_date else None,
        map_index=request.get("map_index", -1),
    )
    token = _context.set(context)
    try:
        with _structured_logs(context), _tracked(request, function, context) as run_id:
            value = function(**kwargs)
    finally:
        _context.reset(token)
    output = store_output(store, value, request["task_name"])
    if run_id is not None:
        _tag_output(request, run_id, output.digest)
    return output.model_dump(mode="json")


@contextlib.contextmanager
def _tracked(request: dict[str, Any], function: Any, context: TaskContext) -> Iterator[str | None]:
    """For a tracked task, an MLflow run active while it runs (see ``task(track=...)``)."""
    wanted = request.get("tracking")
    if wanted is None:
        yield None
        return
    from modelyard.training import tracking

    config = tracking.TrackingConfig(wanted["tracking_uri"], wanted["artifact_root"])
    name = context.task if context.map_index < 0 else f"{context.task}[{context.map_index}]"
    try:
        tags = {
            **wanted["tags"],
            **tracking.code_tags(request["task"], function),
            tracking.ATTEMPT: str(context.attempt),
        }
        run_id = tracking.open_run(config, wanted["project"], name, tags)
    except Exception:  # tracking records the task; it is never a reason for it to fail
        logging.getLogger(__name__).warning(
            "task %s: its MLflow run could not be opened; untracked", name, exc_info=True
        )
        yield None
        return
    with tracking.active_run(config, run_id):
        yield run_id


def _tag_output(request: dict[str, Any], run_id: str, digest: str) -> None:
    from modelyard.training import tracking

    wanted = request["tracking"]
    try:
        config = tracking.TrackingConfig(wanted["tracking_uri"], wanted["artifact_root"])
        config.client().set_tag(run_id, tracking.OUTPUT, digest)
    except Exception:
        logging.getLogger(__name__).warning(
            "could not tag MLflow run %s with its output", run_id, exc_info=True
        )
