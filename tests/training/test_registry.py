"""The model registry: versions registered from a job's run carry its lineage, aliases
move, reference statistics sit next to the model, and ``modelyard models`` shows it all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelyard.cli.main import main
from modelyard.config import Settings
from modelyard.errors import ExitCode, InvalidInputError
from modelyard.training import registry, tracking
from modelyard.training.registry import ModelRef
from modelyard.training.tracking import TrackingConfig
from tests.output import last_json

pytestmark = pytest.mark.integration

T = "tests.training.targets"


def _train(capsys: pytest.CaptureFixture[str], tmp_path: Path, noise: float) -> dict[str, object]:
    reference = tmp_path / f"features-{noise}.parquet"
    args = ["train", "submit", f"{T}:fit_linear", "-P", "rows=500", "-P", f"noise={noise}"]
    assert main([*args, "-P", f"reference={reference}", "-o", "json"]) == 0
    done = last_json(capsys)
    result = done["result"]
    assert isinstance(result, dict)
    return {**result, "job_id": done["job_id"], "reference": str(reference)}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fare", ModelRef("fare")),
        ("fare/3", ModelRef("fare", version="3")),
        ("models:/fare@champion", ModelRef("fare", alias="champion")),
    ],
)
def test_model_references(text: str, expected: ModelRef) -> None:
    assert ModelRef.parse(text) == expected
    assert ModelRef.parse(str(expected)) == expected


@pytest.mark.parametrize("text", ["fare/latest", "bad name", "fare@", "@champion"])
def test_malformed_model_references_are_refused(text: str) -> None:
    with pytest.raises(InvalidInputError):
        ModelRef.parse(text)


def test_a_version_registered_from_a_job_shows_its_lineage_and_statistics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trained = _train(capsys, tmp_path, noise=0.1)
    register = ["models", "register", str(trained["model_uri"]), "--name", "demand"]
    args = [*register, "--alias", "champion", "--tag", "team=pricing"]
    assert main([*args, "--reference", str(trained["reference"]), "-o", "json"]) == 0
    assert last_json(capsys)["version"] == "1"
    assert main(["models", "show", "demand@champion", "-o", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["version"], shown["aliases"]) == ("1", ["champion"])
    assert shown["tags"][tracking.JOB] == trained["job_id"]
    assert shown["tags"][tracking.PROJECT] == "default"
    assert len(shown["tags"][tracking.CODE_VERSION]) == 64
    assert shown["tags"]["team"] == "pricing"
    assert shown["metrics"] == {"rmse": pytest.approx(trained["rmse"])}
    assert shown["params"] == {"noise": "0.1"}
    assert "tensor" in json.dumps(shown["signature"]["inputs"])
    statistics = shown["reference_statistics"]
    assert statistics["rows"] == 500
    assert set(statistics["features"]) == {"a", "b"}
    assert main(["models", "show", "demand"]) == 0  # the table view renders
    out = capsys.readouterr().out
    assert f"training job {trained['job_id']}" in out
    assert "reference statistics (500 rows)" in out


def test_aliases_move_between_versions_and_compare_lines_them_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = TrackingConfig.from_settings(Settings())
    first, second = _train(capsys, tmp_path, 0.1), _train(capsys, tmp_path, 2.0)
    registry.register(str(first["model_uri"]), "demand", config=config, aliases=["champion"])
    registry.register(str(second["model_uri"]), "demand", config=config, aliases=["challenger"])
    assert main(["models", "compare", "demand@champion", "demand@challenger", "-o", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["items"]
    assert [(r["version"], r["params"]["noise"]) for r in rows] == [("1", "0.1"), ("2", "2.0")]
    assert rows[0]["metrics"]["rmse"] < rows[1]["metrics"]["rmse"]
    assert main(["models", "alias", "demand", "champion", "2"]) == 0
    assert str(registry.resolve(config, ModelRef("demand", alias="champion")).version) == "2"
    assert main(["models", "alias", "demand", "challenger", "--delete"]) == 0
    assert main(["models", "show", "demand@challenger"]) == ExitCode.NOT_FOUND
    capsys.readouterr()
    assert main(["models", "list", "-o", "json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)["items"]
    assert (listed["name"], listed["latest"], listed["aliases"]) == (
        "demand",
        "2",
        {"champion": "2"},
    )


def test_registry_mistakes_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "show", "nothing@champion"]) == ExitCode.NOT_FOUND
    assert "does not exist" in capsys.readouterr().err
    assert main(["models", "show", "bad name"]) == ExitCode.USAGE
    missing = ["models", "register", "runs:/0123456789abcdef/model", "--name", "demand"]
    assert main(missing) == ExitCode.USAGE
    assert "cannot register" in capsys.readouterr().err
    assert main(["models", "alias", "demand", "champion", "1"]) == ExitCode.NOT_FOUND
    assert main(["models", "alias", "demand", "v2", "1"]) == ExitCode.USAGE
    assert "'latest' and 'v<number>' name versions" in capsys.readouterr().err
