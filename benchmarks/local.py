"""What every benchmark of modelyard's local runtime starts from: a fresh temporary home
(embedded SQLite store, local artifact folder), a project, and an engine with warm
workers."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from modelyard.cli.admin import prepare_home
from modelyard.config import Settings
from modelyard.pipelines.engine import RunEngine
from modelyard.pipelines.local import local_engine
from modelyard.store.db import opened_engine, session_factory, transaction
from modelyard.store.models import Project


@contextmanager
def bench_engine(workers: int) -> Iterator[tuple[RunEngine, str]]:
    """Yields the engine and the id of the project to create runs in."""
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="modelyard-bench-")))
    prepare_home(settings)
    with opened_engine(settings.resolved_database_url) as store_engine:
        sessions = session_factory(store_engine)
        with transaction(sessions) as session:
            project = Project(name="bench")
            session.add(project)
            session.flush()
            project_id = project.id
        with local_engine(settings, sessions, workers) as engine:
            yield engine, project_id
