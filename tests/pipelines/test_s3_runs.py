"""A pipeline whose artifacts live on S3-compatible storage (moto on loopback)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from modelyard.artifacts import ArtifactStore
from modelyard.pipelines.engine import EngineSettings, RunEngine
from modelyard.runtimes.local.pool import WorkerPool
from modelyard.specs.runs import RunState, TaskState
from modelyard.store.db import session_factory, transaction
from modelyard.store.models import Project, TaskRun
from tests.artifacts.conftest import BUCKET, CREDENTIALS, REGION
from tests.artifacts.conftest import s3_endpoint as s3_endpoint
from tests.pipelines import flows

pytestmark = pytest.mark.integration


@pytest.fixture
def s3_engine(
    engine: Engine, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[RunEngine, str]]:
    # Workers read S3 settings from the environment, as they would in a pod.
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["secret"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    url = f"s3://{BUCKET}/{uuid.uuid4().hex}"
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        project = Project(name="s3")
        session.add(project)
        session.flush()
        project_id = project.id
    settings = EngineSettings(artifacts_url=url, logs_dir=tmp_path / "logs")
    with WorkerPool(1) as pool:
        yield RunEngine(sessions, pool, ArtifactStore(url), settings), project_id


def test_a_run_stores_and_reuses_its_outputs_on_s3(s3_engine: tuple[RunEngine, str]) -> None:
    engine, project_id = s3_engine
    spec = flows.tables.spec("tests/pipelines/flows.py:tables")
    params = flows.tables.validate_params({"rows": 5_000})

    first = engine.create_run(project_id, spec, params)
    assert engine.execute(first) is RunState.SUCCEEDED
    second = engine.create_run(project_id, spec, params)
    assert engine.execute(second) is RunState.SUCCEEDED

    with engine.sessions() as session:
        rows = session.query(TaskRun).filter(TaskRun.run_id.in_([first, second])).all()
    by_run = {(row.run_id, row.node_id): row for row in rows}
    table_ref = by_run[(first, "table")].output
    assert table_ref is not None
    assert engine.store.url.startswith("s3://")
    assert engine.store.read_table(table_ref["ref"]["digest"]).num_rows == 5_000
    count = by_run[(first, "count_rows")].output
    assert count is not None
    assert engine.store.get_json(count["ref"]["digest"]) == 5_000
    assert {by_run[(second, n)].state for n in ("table", "count_rows")} == {TaskState.CACHED}
