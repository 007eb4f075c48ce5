"""Batch prediction: streamed over Parquet in chunks, the model version recorded, a
failing chunk retried and never skipped; the CLI and the pipeline task."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LinearRegression
from sqlalchemy import select

from modelyard.artifacts import ArtifactStore
from modelyard.cli.main import main
from modelyard.cli.runs import store_sessions
from modelyard.config import Settings
from modelyard.errors import ExitCode
from modelyard.serving.batch import ChunkFailedError, predict_parquet, predict_table
from modelyard.serving.models import Batching, load_model
from modelyard.store.models import TaskRun
from tests.serving.slow_model import Flaky

pytestmark = pytest.mark.integration


@pytest.fixture
def linear(tmp_path: Path) -> tuple[Path, LinearRegression]:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    model = LinearRegression().fit(frame, frame["a"] * 3 - frame["b"])
    mlflow.sklearn.save_model(
        model,
        tmp_path / "linear",
        input_example=frame.head(2),
        signature=mlflow.models.infer_signature(frame, model.predict(frame)),
        pip_requirements=["scikit-learn"],
    )
    return tmp_path / "linear", model


def _input(folder: Path, files: int, rows: int) -> pd.DataFrame:
    folder.mkdir()
    rng = np.random.default_rng(2)
    frames = []
    for i in range(files):
        frame = pd.DataFrame(
            {
                "id": np.arange(rows) + i * rows,
                "a": rng.normal(size=rows),
                "b": rng.normal(size=rows),
            }
        )
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / f"{i}.parquet")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_every_row_is_predicted_in_chunks_with_the_version_recorded(
    tmp_path: Path, linear: tuple[Path, LinearRegression], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, model = linear
    expected = _input(tmp_path / "in", files=3, rows=1_000)
    args = ["predict", str(folder), "-i", str(tmp_path / "in"), "-O", str(tmp_path / "out")]
    assert main([*args, "--batch-size", "400", "-o", "json"]) == 0
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (done["rows"], done["parts"], done["retries"]) == (3_000, 9, 0)  # 400+400+200 per file
    table = pq.read_table(tmp_path / "out")
    result = table.to_pandas().sort_values("id")
    np.testing.assert_allclose(result["prediction"], model.predict(expected[["a", "b"]]))
    assert result["id"].tolist() == list(range(3_000))  # every row once, none skipped
    metadata = pq.read_schema(tmp_path / "out" / "part-00000.parquet").metadata
    assert metadata[b"modelyard.model"] == b"linear"
    assert metadata[b"modelyard.model_version"] == b"1"
    manifest = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
    assert manifest["rows"] == 3_000


def _flaky(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failures: int) -> Path:
    monkeypatch.setenv("FLAKY_FILE", str(tmp_path / "failures"))
    monkeypatch.setenv("FLAKY_FAILURES", str(failures))
    example = pd.DataFrame({"x": [1.0]})
    mlflow.pyfunc.save_model(
        tmp_path / "flaky", python_model=Flaky(), input_example=example, pip_requirements=["mlflow"]
    )
    frame = pd.DataFrame({"x": np.arange(30, dtype=float)})  # 13 is in the second chunk
    (tmp_path / "in").mkdir()
    pq.write_table(pa.Table.from_pandas(frame), tmp_path / "in" / "x.parquet")
    return tmp_path / "flaky"


def test_a_failing_chunk_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_model(str(_flaky(tmp_path, monkeypatch, failures=2)), batching=Batching(1))
    result = predict_parquet(model, tmp_path / "in", tmp_path / "out", batch_size=10, retries=2)
    assert (result.rows, result.parts, result.retries) == (30, 3, 2)
    predictions = pq.read_table(tmp_path / "out")["prediction"].to_pylist()
    assert sorted(predictions) == [2.0 * x for x in range(30)]


def test_a_chunk_that_keeps_failing_stops_the_job_and_nothing_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load_model(str(_flaky(tmp_path, monkeypatch, failures=99)), batching=Batching(1))
    with pytest.raises(ChunkFailedError, match=r"chunk 1 \(10 rows\) failed 3 time\(s\)"):
        predict_parquet(model, tmp_path / "in", tmp_path / "out", batch_size=10, retries=2)
    assert [p.name for p in sorted((tmp_path / "out").iterdir())] == ["part-00000.parquet"]
    assert not (tmp_path / "out" / "_SUCCESS").exists()  # the job is visibly unfinished


def test_bad_inputs_are_clear_errors(
    tmp_path: Path, linear: tuple[Path, LinearRegression], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _ = linear
    out = str(tmp_path / "out")
    assert main(["predict", str(folder), "-i", str(tmp_path / "none"), "-O", out]) == ExitCode.USAGE
    assert "neither a Parquet file nor a folder" in capsys.readouterr().err
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"a": [1.0]}), tmp_path / "in" / "x.parquet")
    assert main(["predict", str(folder), "-i", str(tmp_path / "in"), "-O", out]) == ExitCode.USAGE
    assert "has no column(s) ['b']" in capsys.readouterr().err


def test_a_table_is_predicted_as_the_pipeline_task_does(
    tmp_path: Path, linear: tuple[Path, LinearRegression]
) -> None:
    folder, model = linear
    table = pa.table({"a": [1.0, 2.0, 3.0], "b": [0.0, 1.0, 2.0]})
    scored = predict_table(load_model(str(folder), batching=Batching(1)), table, batch_size=2)
    np.testing.assert_allclose(scored["prediction"].to_numpy(), model.predict(table.to_pandas()))
    assert scored.schema.metadata[b"modelyard.model"] == b"linear"


def test_the_batch_prediction_task_in_a_pipeline(
    linear: tuple[Path, LinearRegression], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, model = linear
    flow = "tests/serving/score_flow.py:score"
    assert main(["run", flow, "-P", f"model={folder}", "--workers", "1", "-o", "json"]) == 0
    run_id = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_id"]
    with store_sessions(Settings()) as sessions, sessions() as session:
        (row,) = session.scalars(
            select(TaskRun).where(TaskRun.run_id == run_id, TaskRun.node_id == "batch_predict")
        )
    scored = ArtifactStore(Settings().resolved_artifacts_url).read_table(
        row.output["ref"]["digest"]
    )
    frame = pd.DataFrame({"a": [float(i) for i in range(5)], "b": [1.0] * 5})
    np.testing.assert_allclose(scored["prediction"].to_numpy(), model.predict(frame))
