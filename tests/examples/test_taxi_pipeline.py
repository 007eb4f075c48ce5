"""The taxi pipeline end to end on the local runtime (quarantine, aggregates, caching),
and on Ray with the same artifacts."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from examples.taxi.generate import expected_bad_rows
from modelyard.pipelines.loader import load_pipeline
from modelyard.specs.runs import RunState, TaskState
from modelyard.store.db import transaction
from modelyard.store.models import Project
from tests.artifacts.conftest import s3_endpoint as s3_endpoint
from tests.pipelines.conftest import Runner
from tests.pipelines.conftest import runner as runner
from tests.pipelines.conftest import runtime as runtime
from tests.pipelines.conftest import worker_pool as worker_pool

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PIPELINE = Path(__file__).resolve().parents[2] / "examples" / "taxi" / "pipeline.py"


def test_the_taxi_pipeline_quarantines_aggregates_and_caches(runner: Runner) -> None:
    definition = load_pipeline(f"{PIPELINE}:taxi")
    spec = definition.spec(f"{PIPELINE}:taxi")
    params = definition.validate_params({"rows": 20_000})

    run_id = runner.engine.create_run(runner.project_id, spec, params)
    assert runner.engine.execute(run_id) is RunState.SUCCEEDED

    report = runner.value(run_id, "quality_report")
    assert report["rows"] == 20_000
    assert report["quarantined"] == expected_bad_rows(20_000, 0.005)
    assert sum(report["by_reason"].values()) >= report["quarantined"]
    tasks = runner.tasks(run_id)
    features = tasks["features"].output
    assert features is not None
    assert int(features["ref"]["metadata"]["num_rows"]) == 20_000 - report["quarantined"]
    distance = tasks["by_distance"].output
    assert distance is not None
    buckets = runner.store.read_table(distance["ref"]["digest"])
    assert buckets["distance_bucket"].to_pylist() == ["0-1", "1-3", "3-5", "5-10", ">10"]

    again = runner.engine.create_run(runner.project_id, spec, params)
    assert runner.engine.execute(again) is RunState.SUCCEEDED
    assert set(runner.states(again).values()) == {TaskState.CACHED}


@pytest.mark.usefixtures("ray_runtime")
def test_the_taxi_pipeline_on_ray_stores_the_same_artifacts_as_on_the_local_runtime(
    runner: Runner,
) -> None:
    definition = load_pipeline(f"{PIPELINE}:taxi")
    spec = definition.spec(f"{PIPELINE}:taxi")
    params = definition.validate_params({"rows": 5_000})
    with transaction(runner.sessions) as session:  # its own project: no cache shared
        on_ray = Project(name="taxi-on-ray")
        session.add(on_ray)
        session.flush()
        ray_project = on_ray.id

    digests = {}
    for project_id, where in ((runner.project_id, "local"), (ray_project, "ray")):
        run_id = runner.engine.create_run(project_id, spec, params, runtime=where)
        assert runner.engine.execute(run_id) is RunState.SUCCEEDED
        tasks = runner.tasks(run_id)
        assert {task.state for task in tasks.values()} == {TaskState.SUCCEEDED}  # none cached
        digests[where] = {
            name: task.output["ref"]["digest"]
            for name, task in tasks.items()
            if task.output is not None
        }
    assert set(digests["local"]) == {node.id for node in spec.nodes}
    assert digests["ray"] == digests["local"]


def test_a_scheduled_taxi_run_covers_its_logical_day(runner: Runner) -> None:
    definition = load_pipeline(f"{PIPELINE}:taxi")
    assert definition.schedule is not None
    assert (definition.schedule.cron, definition.schedule.catchup) == ("@daily", False)
    spec = definition.spec(f"{PIPELINE}:taxi")
    params = definition.validate_params({"rows": 2_000})
    run_id = runner.engine.create_run(
        runner.project_id, spec, params, logical_date=datetime(2024, 3, 5, tzinfo=UTC)
    )
    assert runner.engine.execute(run_id) is RunState.SUCCEEDED
    assert runner.value(run_id, "window") == {"start": "2024-03-05", "end": "2024-03-06"}
    trips = runner.tasks(run_id)["clean"].output
    assert trips is not None
    days = runner.store.read_table(trips["ref"]["digest"])["tpep_pickup_datetime"]
    assert {value.date() for value in days.to_pylist()} == {date(2024, 3, 5)}


def test_the_taxi_pipeline_from_the_cli_on_s3_twice_the_second_fully_cached(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import uuid

    from sqlalchemy import select

    from modelyard.cli.main import main
    from modelyard.cli.runs import store_sessions
    from modelyard.config import Settings
    from modelyard.store.models import TaskRun
    from tests.artifacts.conftest import BUCKET, CREDENTIALS, REGION

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["secret"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("MODELYARD_ARTIFACTS_URL", f"s3://{BUCKET}/{uuid.uuid4().hex}")
    args = ["run", f"{PIPELINE}:taxi", "-P", "rows=5000", "--workers", "2", "-o", "json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["state"] == second["state"] == "succeeded"
    with store_sessions(Settings()) as sessions, sessions() as session:
        states = set(
            session.scalars(select(TaskRun.state).where(TaskRun.run_id == second["run_id"]))
        )
    assert states == {"cached"}  # no task ran again
    assert main(["artifacts", "list", "--run", first["run_id"], "-o", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed, "the first run's artifacts are listed from S3"
