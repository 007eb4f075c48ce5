"""Train, tune and register the taxi fare model, as tasks of the taxi pipeline.

    modelyard run examples/taxi/train.py:taxi_train -P rows=200000 -P trials=8

The trips become the feature table exactly as in ``pipeline.py`` (the same tasks, so a
day the taxi pipeline already prepared is reused from the cache). Then ``tune_fare``
searches LightGBM's hyperparameters with Optuna (median stopping prunes trials whose
validation error trails), each trial a child MLflow run of the task's run, and
``register_fare`` registers the best model as ``taxi-fare`` with reference statistics of
its training features: ``@champion`` if it beats the current champion on the same
validation metric, else ``@challenger``.

``modelyard models show taxi-fare@champion`` then leads back from the model to the
feature table, the pipeline run and the code that made it. Running the command again on
the same trips changes nothing: same data and code, so every task is a cache hit.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pipeline import clean, features, ingest, window

from modelyard.config import Settings
from modelyard.pipelines.execute import current_context
from modelyard.pipelines.pipeline import pipeline
from modelyard.pipelines.task import task
from modelyard.specs.training import Distribution, TrialOut, TuneSpec
from modelyard.training import registry, tracking, tuning
from modelyard.training.launch import cancel_on_sigterm

logger = logging.getLogger(__name__)

MODEL = "taxi-fare"
TARGET = "fare_amount"
FEATURES = (
    "pickup_hour",
    "day_of_week",
    "trip_distance",
    "passenger_count",
    "pulocationid",
    "dolocationid",
    "ratecodeid",
    "payment_type",
    "minutes",
)
SPACE = {
    "learning_rate": Distribution(kind="loguniform", low=0.02, high=0.3),
    "num_leaves": Distribution(kind="int", low=8, high=128),
    "min_child_samples": Distribution(kind="int", low=5, high=100),
}


def split(table: pa.Table, seed: int = 0) -> tuple[Any, Any, Any, Any]:
    """A fixed 80/20 train/validation split of the feature table."""
    frame = table.select([*FEATURES, TARGET]).to_pandas()
    valid = np.random.default_rng(seed).random(len(frame)) < 0.2
    x, y = frame[list(FEATURES)].astype("float64"), frame[TARGET].astype("float64")
    return x[~valid], y[~valid], x[valid], y[valid]


def train_fare(
    features_path: str,
    learning_rate: float = 0.1,
    num_leaves: int = 31,
    min_child_samples: int = 20,
    rounds: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """The objective: a LightGBM regressor of the fare; reports the validation RMSE every
    20 rounds (for pruning), logs the model, returns the final RMSE and MAE."""
    import lightgbm

    x_train, y_train, x_valid, y_valid = split(pq.read_table(features_path), seed)

    def report(env: Any) -> None:
        if (env.iteration + 1) % 20 == 0:
            tuning.report(float(env.evaluation_result_list[0][2]), env.iteration + 1)

    model = lightgbm.LGBMRegressor(
        n_estimators=rounds,
        learning_rate=learning_rate,
        num_leaves=num_leaves,
        min_child_samples=min_child_samples,
        n_jobs=1,
        random_state=seed,
        verbose=-1,
    )
    model.fit(
        x_train, y_train, eval_set=[(x_valid, y_valid)], eval_metric="rmse", callbacks=[report]
    )
    errors = model.predict(x_valid) - y_valid.to_numpy()
    scores = {"rmse": float(np.sqrt(np.mean(errors**2))), "mae": float(np.mean(np.abs(errors)))}
    tracking.log_metrics(scores)
    registry.log_model(model, input_example=x_valid.head(5))
    return scores


@task(track=True)
def tune_fare(table: pa.Table, trials: int, parallel: int) -> dict[str, Any]:
    """Search the fare model's hyperparameters; one study per pipeline run, so a retried
    task continues its search."""
    context = current_context()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "features.parquet"
        pq.write_table(table.select([*FEATURES, TARGET]), path)
        spec = TuneSpec(
            study=f"{MODEL}-{context.run_id}",
            entrypoint=f"{Path(__file__).resolve()}:train_fare",
            params={"features_path": str(path)},
            space=SPACE,
            metric="rmse",
            trials=trials,
            parallel=parallel,
            pruner="median",
            seed=0,
        )

        def show(trial: TrialOut) -> None:
            logger.info(
                "trial %s %s: rmse %s %s", trial.number, trial.state, trial.value, trial.params
            )

        stores = tuning.TuneContext.from_settings(Settings())
        with cancel_on_sigterm() as cancel:  # a stopped task stops its trials' gangs
            result = tuning.tune(spec, stores, on_trial=show, cancel=cancel)
    assert result.best is not None  # tune() raises when no trial completed
    config = tracking.TrackingConfig.current()
    return {
        "study": result.study,
        "model_uri": tuning.best_model_uri(config, result),
        "rmse": result.best.value,
        "params": result.best.params,
        "trials": {
            state: sum(t.state == state for t in result.trials)
            for state in ("complete", "pruned", "fail")
        },
    }


@task
def register_fare(table: pa.Table, tuned: dict[str, Any]) -> dict[str, Any]:
    """Register the tuned model with its features' reference statistics, as champion if
    it beats the current one (or there is none), else as challenger."""
    config = tracking.TrackingConfig.current()
    try:
        champion = registry.facts(config, registry.ModelRef(MODEL, alias="champion"))
        best_so_far = champion.metrics.get("rmse")
    except registry.ModelNotFoundError:
        best_so_far = None
    alias = "champion" if best_so_far is None or tuned["rmse"] < best_so_far else "challenger"
    version = registry.register(
        tuned["model_uri"],
        MODEL,
        config=config,
        aliases=[alias],
        tags={"rmse": f"{tuned['rmse']:.4f}"},
        reference=table,
        features=FEATURES,
    )
    return {"name": MODEL, "version": str(version.version), "alias": alias, "rmse": tuned["rmse"]}


@pipeline
def taxi_train(
    rows: int = 200_000,
    trials: int = 8,
    parallel: int = 2,
    start: str | None = None,
    end: str | None = None,
    seed: int = 0,
    source: str | None = None,
) -> None:
    """Trips -> feature table -> tuned fare model -> registered as taxi-fare."""
    dates = window(start, end)
    table = features(clean(ingest(rows, dates, seed, source), dates))
    register_fare(table, tune_fare(table, trials, parallel))
