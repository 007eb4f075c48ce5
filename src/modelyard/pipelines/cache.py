"""Task caching: a key from what decides a result, and outputs reused across runs."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from modelyard.artifacts import ArtifactStore
from modelyard.pipelines.fingerprint import code_fingerprint
from modelyard.pipelines.loader import resolve_target
from modelyard.pipelines.values import digests_in
from modelyard.specs.pipelines import NodeSpec
from modelyard.store.ids import new_id
from modelyard.store.models import CacheEntry


def _reads_context(function: Callable[..., Any]) -> bool:
    code = getattr(function, "__code__", None)
    return code is not None and "current_context" in code.co_names


class TaskCache:
    """Cache keys cover a task's code, its inputs (by content) and its environment:
    nothing else decides a hit. An entry whose artifacts are gone is a miss."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self._fingerprints: dict[tuple[str, int], str] = {}

    def key(
        self,
        node: NodeSpec,
        inputs: dict[str, Any],
        import_path: tuple[str, ...],
        params: dict[str, Any],
        logical_date: datetime | None,
    ) -> str:
        """The cache key of one call. A task that reads its run context
        (``current_context()``) also depends on the run's parameters and logical date."""
        function = resolve_target(node.task, import_path)
        canonical: dict[str, Any] = {
            "task": node.task,
            "code": self._fingerprint(node, function),
            "inputs": inputs,
            "env": node.options.env.model_dump(mode="json"),
        }
        if _reads_context(function):
            canonical["context"] = {"params": params, "logical_date": str(logical_date)}
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def _fingerprint(self, node: NodeSpec, function: Callable[..., Any]) -> str:
        # Keyed by the module object too: an edited pipeline file is a new module.
        key = (node.task, id(sys.modules.get(node.task.partition(":")[0])))
        if key not in self._fingerprints:
            self._fingerprints[key] = code_fingerprint(function)
        return self._fingerprints[key]

    def lookup(self, session: Session, project_id: str, key: str) -> dict[str, Any] | None:
        entry = session.scalar(
            select(CacheEntry).where(
                CacheEntry.project_id == project_id, CacheEntry.cache_key == key
            )
        )
        if entry is None or not all(self.store.exists(d) for d in digests_in(entry.output)):
            return None
        return dict(entry.output)

    def remember(
        self,
        session: Session,
        project_id: str,
        key: str,
        output: dict[str, Any],
        task_run_id: str,
    ) -> None:
        """Record (or refresh) the output for ``key``; two runs finishing the same task at
        once both succeed, the last one's output is kept (they are the same content)."""
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(CacheEntry).values(
            id=new_id(),
            project_id=project_id,
            cache_key=key,
            output=output,
            task_run_id=task_run_id,
            created_at=datetime.now(UTC),
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[CacheEntry.project_id, CacheEntry.cache_key],
                set_={"output": output, "task_run_id": task_run_id},
            )
        )
