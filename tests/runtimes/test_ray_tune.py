"""Hyperparameter search on Ray Tune, written once and run on every tuning runtime:
failing trials recorded, each trial a child MLflow run, pruning, the same sampler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelyard.cli.main import main
from modelyard.config import Settings
from modelyard.errors import ExitCode
from modelyard.specs.training import Distribution, TuneSpec
from modelyard.training import tuning
from modelyard.training.tuning import MissingMetricError, TuneContext, TuneRuntime

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T = "tests.runtimes.tuning_targets"
X = Distribution(kind="uniform", low=-5, high=5)


@pytest.fixture(params=tuning.RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> TuneRuntime:
    """Each tuning runtime; ``ray`` on the session's local Ray."""
    if request.param == "ray":
        request.getfixturevalue("ray_runtime")
    chosen: TuneRuntime = request.param
    return chosen


@pytest.fixture
def context() -> TuneContext:
    settings = Settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    return TuneContext.from_settings(settings)


def _spec(study: str, entrypoint: str, folder: Path, **fields: object) -> TuneSpec:
    return TuneSpec.model_validate(
        {
            "study": study,
            "entrypoint": f"{T}:{entrypoint}",
            "params": {"folder": str(folder)},
            "space": {"x": X},
            "metric": "loss",
            **fields,
        }
    )


def test_a_failing_trial_is_recorded_and_every_trial_is_a_child_run(
    runtime: TuneRuntime, context: TuneContext, tmp_path: Path
) -> None:
    spec = _spec("bowl", "bowl", tmp_path / "calls", trials=4, parallel=2, seed=3)
    seen: list[int] = []
    result = tuning.tune(spec, context, on_trial=lambda t: seen.append(t.number), runtime=runtime)
    assert sorted(seen) == [0, 1, 2, 3]
    assert [t.number for t in result.trials] == [0, 1, 2, 3]
    failed = [t for t in result.trials if t.state == "fail"]
    complete = [t for t in result.trials if t.state == "complete"]
    assert len(failed) == 1  # the objective's second call
    assert failed[0].reason == "rank 0 raised builtins.ValueError: this trial diverges"
    assert len(complete) == 3
    for trial in complete:
        assert -5 <= trial.params["x"] <= 5
        assert trial.value == pytest.approx((trial.params["x"] - 2) ** 2)
    assert result.best is not None
    assert result.best.number == min(complete, key=lambda t: t.value or 0.0).number
    assert context.tracking is not None
    client = context.tracking.client()
    study_run = client.get_run(result.mlflow_run_id or "")
    assert study_run.data.tags[tuning.STUDY_TAG] == "bowl"
    assert study_run.data.metrics["best_loss"] == pytest.approx(result.best.value)
    assert study_run.info.status == "FINISHED"
    for trial in result.trials:
        run = client.get_run(trial.mlflow_run_id or "")
        assert run.data.tags["mlflow.parentRunId"] == result.mlflow_run_id
        assert run.data.tags[tuning.TRIAL_TAG] == str(trial.number)
        assert run.data.params["x"] == str(trial.params["x"])
        assert run.info.status == ("FINISHED" if trial.state == "complete" else "FAILED")
        if trial.state == "complete":
            history = client.get_metric_history(run.info.run_id, "loss")
            assert [m.step for m in history] == [0, 1, 2]  # every report() logged


def test_a_trial_trailing_the_median_is_pruned(
    runtime: TuneRuntime, context: TuneContext, tmp_path: Path
) -> None:
    spec = _spec(
        "trailing",
        "late_trials_trail",
        tmp_path / "calls",
        trials=3,
        pruner="median",
        seed=1,
    )
    result = tuning.tune(spec, context, runtime=runtime)
    assert [t.state for t in result.trials] == ["complete", "complete", "pruned"]
    pruned = result.trials[2]
    assert pruned.reason.startswith("pruned at step 1")
    assert context.tracking is not None
    client = context.tracking.client()
    assert client.get_run(pruned.mlflow_run_id or "").info.status == "KILLED"
    history = client.get_metric_history(pruned.mlflow_run_id or "", "loss")
    assert 2 <= len(history) < 4  # stopped early: not every epoch ran


def test_an_objective_without_the_metric_stops_the_search(
    runtime: TuneRuntime, context: TuneContext
) -> None:
    spec = TuneSpec(
        study="forgetful",
        entrypoint=f"{T}:forgets_the_metric",
        space={"x": X},
        metric="loss",
        trials=6,
    )
    with pytest.raises(MissingMetricError, match="returned \\['accuracy'\\]"):
        tuning.tune(spec, context, runtime=runtime)
    assert context.tracking is not None
    client = context.tracking.client()
    experiment = client.get_experiment_by_name("default")
    assert experiment is not None
    trials = client.search_runs(
        [experiment.experiment_id], f"tags.`{tuning.STUDY_TAG}` = 'forgetful'"
    )
    assert 1 < len(trials) <= 3  # the study's run and one trial (two if Tune queued one)


def test_a_seeded_study_samples_the_same_values_on_both_runtimes(
    ray_runtime: object, context: TuneContext, tmp_path: Path
) -> None:
    results = {
        runtime: tuning.tune(
            _spec(f"same-{runtime}", "bowl", tmp_path / runtime, trials=3, seed=11),
            context,
            runtime=runtime,
        )
        for runtime in tuning.RUNTIMES
    }
    local, ray = (results[runtime].trials for runtime in tuning.RUNTIMES)
    assert [t.params for t in local] == [t.params for t in ray]
    assert [(t.state, t.value) for t in local] == [(t.state, t.value) for t in ray]


def _model_digests(context: TuneContext, result: tuning.StudyRun) -> list[str]:
    """A digest of each trial's logged model, in trial order: of the fitted model as
    loaded back (the skops file MLflow writes names its entries by object ids, so its
    bytes differ between any two saves)."""
    import joblib
    import mlflow

    assert context.tracking is not None
    client = context.tracking.client()
    experiment = client.get_run(result.mlflow_run_id or "").info.experiment_id
    mlflow.set_tracking_uri(context.tracking.tracking_uri)
    digests = []
    for trial in result.trials:
        (model,) = client.search_logged_models(
            [experiment], filter_string=f"source_run_id = '{trial.mlflow_run_id}'"
        )
        digests.append(joblib.hash(mlflow.sklearn.load_model(model.model_uri)))
    return digests


def test_a_seeded_study_logs_the_same_models_on_both_runtimes(
    ray_runtime: object, context: TuneContext, tmp_path: Path
) -> None:
    results = {
        runtime: tuning.tune(
            TuneSpec.model_validate(
                {
                    "study": f"models-{runtime}",
                    "entrypoint": "tests.training.targets:quadratic",
                    "params": {"kind": "ok", "epochs": 1},
                    "space": {"x": X, "y": {"kind": "int", "low": 0, "high": 3}},
                    "metric": "loss",
                    "trials": 3,
                    "seed": 5,
                }
            ),
            context,
            runtime=runtime,
        )
        for runtime in tuning.RUNTIMES
    }
    local, ray = (_model_digests(context, results[r]) for r in tuning.RUNTIMES)
    assert len(set(local)) == 3  # three models, one a trial, each its own
    assert local == ray


def test_the_command_runs_a_search_on_ray(
    ray_runtime: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["tune", f"{T}:bowl", "-S", "x=uniform(-5,5)", "--metric", "loss"]
    folder = ["-P", f"folder={tmp_path / 'calls'}", "--trials", "2", "--study", "cli"]
    assert main([*args, *folder, "--runtime", "ray", "-o", "json"]) == 0
    result = json.loads(capsys.readouterr().out)  # Tune printed nothing to stdout
    assert [t["state"] for t in result["trials"]] == ["complete", "fail"]
    assert result["best"]["number"] == 0


def test_an_unknown_runtime_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["tune", f"{T}:bowl", "-S", "x=uniform(0,1)", "--metric", "loss"]
    assert main([*args, "--runtime", "spark"]) == ExitCode.USAGE
    assert "--runtime is local or ray, not 'spark'" in capsys.readouterr().err
