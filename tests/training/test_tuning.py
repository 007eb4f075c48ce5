"""Hyperparameter search: trials in their own processes and child MLflow runs, failing
trials recorded, pruning, a study that continues after its process stopped."""

from __future__ import annotations

import json
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from modelyard.cli.main import main
from modelyard.config import Settings
from modelyard.errors import ExitCode
from modelyard.pipelines.runs import new_owner
from modelyard.specs.training import Distribution, TuneSpec
from modelyard.training import tuning
from modelyard.training.tracking import TrackingConfig

T = "tests.training.targets"
SPACE = ["-S", "x=uniform(-5,5)", "-S", "y=int(0,3)", "-S", "kind=choice(good,broken)"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("uniform(0, 1)", Distribution(kind="uniform", low=0, high=1)),
        ("loguniform(1e-3,0.3)", Distribution(kind="loguniform", low=1e-3, high=0.3)),
        ("int(16, 256, 16)", Distribution(kind="int", low=16, high=256, step=16)),
        (
            "choice(gbdt, dart, 3, true)",
            Distribution(kind="choice", choices=("gbdt", "dart", 3, True)),
        ),
    ],
)
def test_search_spaces_parse(text: str, expected: Distribution) -> None:
    assert Distribution.parse(text) == expected


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("x=gaussian(0,1)", "gaussian takes (low, high) or is not a known kind"),
        ("x=uniform(5,1)", "low must be below high"),
        ("x=loguniform(0,1)", "needs low > 0"),
        ("x=int(0.5,3)", "whole numbers"),
        ("x=choice()", "at least one value"),
        ("x=uniform(0,1,2)", "step is for int(low, high, step)"),
        ("x", "is not name=distribution"),
    ],
)
def test_malformed_searches_are_refused_before_any_trial(
    space: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["tune", f"{T}:quadratic", "-S", space, "--metric", "loss"]
    assert main(args) == ExitCode.USAGE
    assert message in capsys.readouterr().err
    assert not (Settings().home / "optuna.db").exists()


def test_a_parameter_cannot_be_both_fixed_and_searched() -> None:
    with pytest.raises(ValueError, match="both fixed params and searched"):
        TuneSpec(
            study="s",
            entrypoint=f"{T}:quadratic",
            params={"x": 1.0},
            space={"x": Distribution(kind="uniform", low=0, high=1)},
            metric="loss",
        )


def _tune(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    code = main(["tune", f"{T}:quadratic", *SPACE, "--metric", "loss", *args, "-o", "json"])
    out = capsys.readouterr().out
    return code, (json.loads(out) if code == 0 else {})


@pytest.mark.integration
def test_failing_trials_are_recorded_and_the_best_model_is_registered(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, result = _tune(
        capsys, "--trials", "4", "--parallel", "2", "--seed", "2", "--register", "quad"
    )
    assert code == 0
    trials = result["trials"]
    assert isinstance(trials, list)
    states = {t["number"]: (t["state"], t["params"]["kind"]) for t in trials}
    assert states == {
        0: ("complete", "good"),
        1: ("fail", "broken"),
        2: ("complete", "good"),
        3: ("fail", "broken"),
    }
    assert all("this kind of model diverges" in t["reason"] for t in trials if t["state"] == "fail")
    complete = [t for t in trials if t["state"] == "complete"]
    best = min(complete, key=lambda t: t["value"])
    assert result["best"]["number"] == best["number"]
    assert best["value"] == pytest.approx(
        (best["params"]["x"] - 2) ** 2 + 0.01 * best["params"]["y"]
    )
    client = TrackingConfig.from_settings(Settings()).client()
    for trial in trials:  # each trial is a child run of the study's run, failed ones too
        run = client.get_run(trial["mlflow_run_id"])
        assert run.data.tags["mlflow.parentRunId"] == result["mlflow_run_id"]
        assert run.info.status == ("FINISHED" if trial["state"] == "complete" else "FAILED")
        assert run.data.params["x"] == str(trial["params"]["x"])
    assert result["registered"] == "quad/1@champion"
    assert main(["models", "show", "quad@champion", "-o", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["run_id"] == best["mlflow_run_id"]
    assert shown["tags"][tuning.STUDY_TAG] == "quadratic"


@pytest.mark.integration
def test_a_metric_the_objective_never_logs_stops_the_search_at_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["tune", f"{T}:never_logs", "-S", "x=uniform(0,1)", "--metric", "rmse"]
    assert main([*args, "--trials", "10"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "never produced metric 'rmse'" in err
    assert "returned ['accuracy']" in err
    study = optuna.load_study(
        study_name="never_logs", storage=Settings().resolved_tuning_storage_url
    )
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]  # not ten


@pytest.mark.integration
def test_a_study_continues_after_its_process_stopped(capsys: pytest.CaptureFixture[str]) -> None:
    code, first = _tune(capsys, "--trials", "1", "--seed", "2")
    assert code == 0
    code, _ = _tune(capsys, "--trials", "2", "-S", "z=uniform(0,1)")
    assert code == ExitCode.USAGE  # the study is continued with its own search space only
    # Trials left running: by a search here whose process died (1), by a search on
    # another machine that went silent (2), and by one there that is alive (3).
    storage = Settings().resolved_tuning_storage_url
    study = optuna.load_study(study_name="quadratic", storage=storage)
    here = new_owner().split(":")
    for owner, beat in (
        (f"{here[0]}:999999999:{here[2]}", time.time()),
        ("elsewhere:7:abc", time.time() - tuning.HEARTBEAT_GRACE_S - 5),
        ("elsewhere:8:def", time.time()),
    ):
        left = study.ask()
        left.set_user_attr("modelyard_owner", owner)
        left.set_user_attr("modelyard_heartbeat", beat)
    code, again = _tune(capsys, "--trials", "3", "--seed", "2")
    assert code == 0
    trials = again["trials"]
    assert isinstance(trials, list)
    states = [(t["number"], t["state"]) for t in trials][:4]
    assert states == [(0, "complete"), (1, "fail"), (2, "fail"), (3, "running")]
    assert {trials[1]["reason"], trials[2]["reason"]} == {"its search process stopped"}
    assert len(trials) == 6  # orphans do not count: two new trials make three
    assert trials[0] == first["trials"][0]  # type: ignore[index]
    assert again["mlflow_run_id"] == first["mlflow_run_id"]


@pytest.mark.integration
def test_a_trial_worse_than_the_median_is_pruned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(
        study_name="pruning", storage=storage, pruner=tuning._pruner("median")
    )
    for _ in range(2):
        done = study.ask()
        for step in range(3):
            done.report(1.0, step)
        study.tell(done, 1.0)
    trial = study.ask()
    wanted = {
        "storage": storage,
        "study": "pruning",
        "trial_id": trial._trial_id,
        "pruner": "median",
        "metric": "loss",
    }
    monkeypatch.setenv(tuning.TRIAL_ENV, json.dumps(wanted))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tuning._current_trial.cache_clear()
    try:
        tuning.report(4.0, 0)  # worse than the median, but within the warm-up step
        with pytest.raises(optuna.TrialPruned, match="pruned at step 1"):
            tuning.report(5.0, 1)
    finally:
        tuning._current_trial.cache_clear()
        import mlflow

        mlflow.end_run()
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs(["0"])[0]
    history = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_metric_history(
        run.info.run_id, "loss"
    )
    assert [(m.step, m.value) for m in history] == [(0, 4.0), (1, 5.0)]  # logged as reported


@pytest.mark.integration
def test_a_diverging_trial_fails_without_stopping_the_search(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["tune", f"{T}:diverging", "-S", "x=uniform(0,1)", "--metric", "loss"]
    assert main([*args, "--trials", "2", "--parallel", "2"]) == 1
    assert "every trial of 'diverging' failed: loss is nan (diverged?)" in capsys.readouterr().err
