"""What the store remembers about artifacts: who made them, who read them, who needs them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelyard.pipelines.values import digests_in
from modelyard.store.models import ArtifactLink, CacheEntry, PipelineRun, TaskAttempt, TaskRun


@dataclass(frozen=True)
class LineageEdge:
    direction: str  # "produced" or "consumed"
    run_id: str
    pipeline: str
    task: str
    at: datetime


def lineage(session: Session, digest: str) -> list[LineageEdge]:
    """Every task run that produced or consumed ``digest``, oldest first."""
    rows = session.execute(
        select(
            ArtifactLink.direction,
            PipelineRun.id,
            PipelineRun.pipeline,
            TaskRun.node_id,
            TaskRun.map_index,
            ArtifactLink.created_at,
        )
        .join(PipelineRun, PipelineRun.id == ArtifactLink.run_id)
        .join(TaskRun, TaskRun.id == ArtifactLink.task_run_id)
        .where(ArtifactLink.digest == digest)
        .order_by(ArtifactLink.created_at, ArtifactLink.id)
    ).all()
    return [
        LineageEdge(direction, run_id, pipeline, node if index < 0 else f"{node}[{index}]", at)
        for direction, run_id, pipeline, node, index, at in rows
    ]


def referenced_digests(session: Session) -> set[str]:
    """Every artifact a run, the cache or a log still points at: what gc must keep."""
    outputs: Iterable[dict[str, Any] | None] = [
        *session.scalars(select(TaskRun.output)),
        *session.scalars(select(CacheEntry.output)),
    ]
    keep = {digest for output in outputs if output for digest in digests_in(output)}
    keep.update(str(ref["digest"]) for ref in session.scalars(select(TaskAttempt.log_ref)) if ref)
    return keep
