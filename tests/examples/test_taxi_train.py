"""The taxi fare model trained, tuned and registered by one command, and traced back
from its registered version to the feature table it learned from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelyard.artifacts import ArtifactStore
from modelyard.cli.main import main
from modelyard.config import Settings
from modelyard.errors import ExitCode
from modelyard.training import tracking

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRAIN = Path(__file__).resolve().parents[2] / "examples" / "taxi" / "train.py"


def _run(capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    args = ["run", f"{TRAIN}:taxi_train", "-P", "rows=20000", "-P", "trials=3", "-o", "json"]
    assert main([*args, *extra]) == 0
    run = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert run["state"] == "succeeded"
    return str(run["run_id"])


def _show(capsys: pytest.CaptureFixture[str], model: str) -> dict[str, object]:
    assert main(["models", "show", model, "-o", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert isinstance(shown, dict)
    return shown


def test_one_command_trains_tunes_and_registers_the_champion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_id = _run(capsys)
    champion = _show(capsys, "taxi-fare@champion")
    tags = champion["tags"]
    assert isinstance(tags, dict)
    assert tags[tracking.PIPELINE_RUN] == run_id
    assert tags[tracking.TASK] == "tune_fare"
    # Lineage: the version's input is the feature table that run's features task made.
    inputs = champion["lineage"]["inputs"]  # type: ignore[index]
    assert len(inputs) == 1
    (producers,) = inputs.values()
    assert producers == [f"taxi_train run {run_id} · task features"]
    (digest,) = inputs
    table = ArtifactStore(Settings().resolved_artifacts_url).read_table(digest)
    statistics = champion["reference_statistics"]
    assert isinstance(statistics, dict)
    assert statistics["rows"] == table.num_rows  # computed from that very table
    assert "fare_amount" not in statistics["features"]  # the target is not a feature
    assert {"trip_distance", "minutes", "pickup_hour"} <= set(statistics["features"])
    # The model learned something: far better than always predicting the mean fare.
    fares = table["fare_amount"].to_numpy()
    baseline = float(np.sqrt(np.mean((fares - fares.mean()) ** 2)))
    metrics = champion["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["rmse"] < 0.5 * baseline
    assert champion["signature"] is not None

    # The same command again changes nothing: same data and code, every task cached.
    _run(capsys)
    assert main(["models", "show", "taxi-fare/2"]) == ExitCode.NOT_FOUND
    # Other trips: a new version, champion only if it beats the current one on the same
    # validation metric.
    _run(capsys, "-P", "seed=1")
    second = _show(capsys, "taxi-fare/2")
    second_metrics = second["metrics"]
    assert isinstance(second_metrics, dict)
    better = second_metrics["rmse"] < metrics["rmse"]
    assert second["aliases"] == (["champion"] if better else ["challenger"])
    assert _show(capsys, "taxi-fare@champion")["version"] == ("2" if better else "1")
    second_inputs = second["lineage"]["inputs"]  # type: ignore[index]
    assert list(second_inputs) != [digest]
