"""Fixtures for running pipelines for real: a store, a project, workers, artifacts.

A test decorated with ``@on_every_runtime`` runs once per runtime that can run here
(the local worker pool, and a local Ray); others run on the local pool.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from modelyard.artifacts import ArtifactStore
from modelyard.config import Settings
from modelyard.pipelines.engine import EngineSettings, RunEngine
from modelyard.pipelines.local import WORKER_PRELOAD
from modelyard.pipelines.pipeline import PipelineDefinition
from modelyard.runtimes import open_runtime
from modelyard.runtimes.local.pool import WorkerPool
from modelyard.specs.runs import RunState
from modelyard.store.db import session_factory, transaction
from modelyard.store.models import PipelineRun, Project, TaskRun

# Ray's parameters are slow: a run's tasks wait for Ray's scheduling, and the first test
# starts Ray (a few seconds, once per session).
on_every_runtime = pytest.mark.parametrize(
    "runtime", ["local", pytest.param("ray", marks=pytest.mark.slow)], indirect=True
)


@pytest.fixture
def runtime(request: pytest.FixtureRequest) -> str:
    """Where the runner's runs run: ``local`` unless a test is ``@on_every_runtime``."""
    name: str = getattr(request, "param", "local")
    if name == "ray":
        request.getfixturevalue("ray_runtime")  # the session's Ray, started once
    return name


@pytest.fixture(scope="session")
def worker_pool() -> Iterator[WorkerPool]:
    with WorkerPool(2, stop_grace=1.0, preload=WORKER_PRELOAD) as pool:
        yield pool


@dataclass
class Runner:
    engine: RunEngine
    sessions: sessionmaker[Session]
    project_id: str
    store: ArtifactStore
    trace_dir: Path
    runtime: str = "local"

    def start(self, definition: PipelineDefinition, **params: Any) -> str:
        spec = definition.spec(f"tests/pipelines/flows.py:{definition.name}")
        values = definition.validate_params(params)
        return self.engine.create_run(self.project_id, spec, values, runtime=self.runtime)

    def run(self, definition: PipelineDefinition, **params: Any) -> tuple[str, RunState]:
        run_id = self.start(definition, **params)
        return run_id, self.engine.execute(run_id)

    def tasks(self, run_id: str) -> dict[str, TaskRun]:
        with self.sessions() as session:
            rows = session.scalars(select(TaskRun).where(TaskRun.run_id == run_id))
            return {
                row.node_id if row.map_index < 0 else f"{row.node_id}[{row.map_index}]": row
                for row in rows
            }

    def states(self, run_id: str) -> dict[str, str]:
        return {name: row.state for name, row in self.tasks(run_id).items()}

    def value(self, run_id: str, node: str) -> Any:
        output = self.tasks(run_id)[node].output
        assert output is not None
        return self.store.get_json(output["ref"]["digest"])

    def executions(self, name: str) -> int:
        path = self.trace_dir / f"{name}.count"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def run_row(self, run_id: str) -> PipelineRun:
        with self.sessions() as session:
            row = session.get(PipelineRun, run_id)
            assert row is not None
            return row


@pytest.fixture
def runner(
    engine: Engine, worker_pool: WorkerPool, runtime: str, tmp_path: Path
) -> Iterator[Runner]:
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        project = Project(name="pipelines")
        session.add(project)
        session.flush()
        project_id = project.id
    store = ArtifactStore(str(tmp_path / "artifacts"))
    settings = EngineSettings(artifacts_url=store.url, logs_dir=tmp_path / "logs")
    trace_dir = tmp_path / "trace"
    trace_dir.mkdir()
    # Other runtimes are opened as 'modelyard up' opens them (Ray: the session's, reused).
    run_engine = RunEngine(
        sessions,
        worker_pool,
        store,
        settings,
        open_runtime=lambda name: open_runtime(name, Settings()),
    )
    yield Runner(run_engine, sessions, project_id, store, trace_dir, runtime)
    run_engine.close()
