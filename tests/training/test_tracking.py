"""MLflow tracking: a run per training job in its project's experiment, tagged with the
job and the code; buffered metric logging from rank 0."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from sqlalchemy import select

from modelyard.artifacts import ArtifactStore
from modelyard.cli.main import main
from modelyard.cli.runs import store_sessions
from modelyard.config import Settings
from modelyard.store.models import TaskRun
from modelyard.training import tracking
from modelyard.training.tracking import MetricLogger, TrackingConfig
from tests.output import last_json

pytestmark = pytest.mark.integration

T = "tests.training.targets"


@pytest.fixture
def config(tmp_path: Path) -> TrackingConfig:
    return TrackingConfig.from_settings(Settings(home=tmp_path / "home"))


def test_the_embedded_store_lives_in_the_home_with_artifacts_in_the_artifact_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(home=tmp_path / "home")
    config = TrackingConfig.from_settings(settings)
    assert config.tracking_uri == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    assert config.artifact_root == (tmp_path / "home" / "artifacts").as_uri() + "/mlflow"
    experiment = tracking.project_experiment(config, "fraud")
    assert tracking.project_experiment(config, "fraud") == experiment
    found = config.client().get_experiment(experiment)
    assert (found.name, found.artifact_location) == ("fraud", f"{config.artifact_root}/fraud")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert TrackingConfig.from_settings(settings) == TrackingConfig(
        "http://mlflow.internal:5000", None
    )


def test_a_job_gets_a_run_tagged_with_its_project_job_and_code(
    capsys: pytest.CaptureFixture[str], config: TrackingConfig
) -> None:
    args = ["train", "submit", f"{T}:tracked", "--workers", "2", "-P", "epochs=5", "-o", "json"]
    assert main(args) == 0
    done = last_json(capsys)
    assert main(["train", "status", str(done["job_id"]), "-o", "json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["mlflow_run_id"]
    assert done["result"] == {"run": run_id}  # the workers logged to the job's run
    client = config.client()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "default"
    tags = run.data.tags
    assert tags[tracking.PROJECT] == "default"
    assert tags[tracking.JOB] == done["job_id"]
    assert len(tags[tracking.CODE_VERSION]) == 64
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    assert tags[tracking.GIT_COMMIT].split("-")[0] == head.stdout.strip()
    assert tags["written_by"] == "rank 0"
    assert run.data.params == {"epochs": "5"}
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(i, 1.0 / (i + 1)) for i in range(5)]


def test_a_failed_job_fails_its_run_and_a_script_is_versioned_by_content(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: TrackingConfig
) -> None:
    script = tmp_path / "train.py"
    script.write_text("import sys\nsys.exit(3)\n")
    assert main(["train", "submit", str(script), "-o", "json"]) == 1
    job_id = str(last_json(capsys)["job_id"])
    assert main(["train", "status", job_id, "-o", "json"]) == 0
    run = config.client().get_run(json.loads(capsys.readouterr().out)["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["modelyard.outcome"] == "failed: rank 0 exited with code 3"
    assert run.data.tags[tracking.CODE_VERSION] == hashlib.sha256(script.read_bytes()).hexdigest()


def test_buffered_points_are_written_in_batches_of_a_thousand(
    config: TrackingConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = tracking.open_run(config, "default", "loop", {})
    mlflow.set_tracking_uri(config.tracking_uri)
    batches: list[int] = []
    real = MlflowClient.log_batch

    def counting(self: MlflowClient, run_id: str, metrics: list[object], **kw: object) -> object:
        batches.append(len(metrics))
        return real(self, run_id, metrics=metrics, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(MlflowClient, "log_batch", counting)
    logger = MetricLogger(run_id, flush_seconds=3600)
    for step in range(2500):
        logger.log_metric("loss", step / 2500, step)
    assert batches == [1000, 1000]  # two full buffers, nothing waiting longer than asked
    logger.flush()
    assert batches == [1000, 1000, 500]
    history = config.client().get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == list(range(2500))


def test_other_ranks_log_nothing(config: TrackingConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = tracking.open_run(config, "default", "ranked", {})
    mlflow.set_tracking_uri(config.tracking_uri)
    monkeypatch.setenv("RANK", "1")
    logger = MetricLogger(run_id)
    logger.log_metric("loss", 1.0)
    logger.flush()
    assert config.client().get_metric_history(run_id, "loss") == []


def _pipeline_runs(config: TrackingConfig, pipeline_run: str) -> list[mlflow.entities.Run]:
    client = config.client()
    experiment = tracking.project_experiment(config, "default")
    found = client.search_runs(
        [experiment], filter_string=f"tags.`{tracking.PIPELINE_RUN}` = '{pipeline_run}'"
    )
    return list(found)


def test_a_tracked_task_gets_a_run_with_its_inputs_output_and_code(
    capsys: pytest.CaptureFixture[str], config: TrackingConfig
) -> None:
    flow = "tests/training/tracked_flow.py:tracked_flow"
    assert main(["run", flow, "-P", "n=4", "--workers", "1", "-o", "json"]) == 0
    run_id = str(last_json(capsys)["run_id"])
    with store_sessions(Settings()) as sessions, sessions() as session:
        rows = session.scalars(select(TaskRun).where(TaskRun.run_id == run_id))
        digests = {row.node_id: row.output["ref"]["digest"] for row in rows if row.output}
    (tracked,) = _pipeline_runs(config, run_id)  # one run: the untracked task has none
    tags = tracked.data.tags
    assert tags[tracking.TASK] == "fit"
    assert tags[tracking.PIPELINE] == "tracked_flow"
    assert tags[tracking.INPUTS] == digests["table"]
    assert tags[tracking.OUTPUT] == digests["fit"]
    assert len(tags[tracking.CODE_VERSION]) == 64
    assert tracked.info.status == "FINISHED"
    assert tracked.data.params == {"rows": "4"}
    assert tracked.data.metrics == {"mean": 1.5}


def test_a_failing_tracked_task_fails_its_run(
    capsys: pytest.CaptureFixture[str], config: TrackingConfig
) -> None:
    flow = "tests/training/tracked_flow.py:tracked_flow"
    assert main(["run", flow, "-P", "fail=true", "--workers", "1", "-o", "json"]) == 1
    (failed,) = _pipeline_runs(config, str(last_json(capsys)["run_id"]))
    assert failed.info.status == "FAILED"
    assert failed.data.metrics == {"mean": 4.5}  # what it logged before it raised is kept


def test_a_training_job_runs_as_a_pipeline_task_in_the_tasks_run(
    capsys: pytest.CaptureFixture[str], config: TrackingConfig
) -> None:
    flow = "tests/training/tracked_flow.py:job_flow"
    assert main(["run", flow, "-P", "epochs=4", "--workers", "1", "-o", "json"]) == 0
    run_id = str(last_json(capsys)["run_id"])
    (tracked,) = _pipeline_runs(config, run_id)
    assert tracked.data.tags[tracking.TASK] == "training_job"
    assert tracked.info.status == "FINISHED"
    with store_sessions(Settings()) as sessions, sessions() as session:
        (job,) = session.scalars(
            select(TaskRun).where(TaskRun.run_id == run_id, TaskRun.node_id == "training_job")
        )
        output = job.output
    assert output is not None
    result = ArtifactStore(Settings().resolved_artifacts_url).get_json(output["ref"]["digest"])
    assert result == {"run": tracked.info.run_id}  # rank 0 logged into the task's run
    history = config.client().get_metric_history(tracked.info.run_id, "loss")
    assert len(history) == 4
    args = ["run", flow, "-P", "entrypoint=tests.training.targets:nowhere", "--workers", "1"]
    assert main([*args, "-o", "json"]) == 1
    failed_run = str(last_json(capsys)["run_id"])
    with store_sessions(Settings()) as sessions, sessions() as session:
        (failed,) = session.scalars(
            select(TaskRun).where(TaskRun.run_id == failed_run, TaskRun.node_id == "training_job")
        )
    assert failed.error is not None
    message = str(failed.error["message"])  # either rank may be the first to fail
    assert message.startswith("training job 'tracked' failed after 1 attempt(s): rank ")
    assert "has no attribute 'nowhere'" in message


def test_a_stopped_training_task_stops_its_gang(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = "tests/training/tracked_flow.py:stuck_flow"
    assert main(["run", flow, "-P", f"folder={tmp_path}", "--workers", "1"]) == 1
    pids = [int(p.read_text()) for p in sorted(tmp_path.glob("rank-*.pid"))]
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)  # the task's timeout reached its workers


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        Path(f"/proc/{pid}").exists()
        and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    )


def test_the_embedded_store_keeps_its_artifact_root_when_mlflow_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(home=tmp_path / "home")
    embedded = TrackingConfig.from_settings(settings)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", embedded.tracking_uri)  # as set_tracking_uri does
    assert TrackingConfig.from_settings(settings) == embedded
