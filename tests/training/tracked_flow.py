"""A pipeline with a tracked task (tests run it with ``modelyard run``)."""

from __future__ import annotations

import pyarrow as pa

from modelyard.pipelines.pipeline import pipeline
from modelyard.pipelines.task import task
from modelyard.training.pipeline_task import training_job


@task
def table(n: int) -> pa.Table:
    return pa.table({"x": list(range(n))})


@task(track=True)
def fit(data: pa.Table, fail: bool) -> dict[str, int]:
    import mlflow

    from modelyard.training import tracking

    mlflow.log_param("rows", data.num_rows)
    tracking.log_metrics({"mean": sum(data["x"].to_pylist()) / data.num_rows})
    if fail:
        raise ValueError("diverged")
    return {"rows": data.num_rows}


@pipeline
def tracked_flow(n: int = 10, fail: bool = False) -> None:
    fit(table(n), fail)


@pipeline
def job_flow(
    epochs: int = 3, workers: int = 2, entrypoint: str = "tests.training.targets:tracked"
) -> None:
    training_job(
        {
            "name": "tracked",
            "entrypoint": entrypoint,
            "workers": workers,
            "params": {"epochs": epochs},
            "failure_policy": {"backoff_limit": 0},
        },
        after=[table(epochs)],
    )


@pipeline
def stuck_flow(folder: str) -> None:
    training_job.with_options(timeout=8)(
        {
            "name": "stuck",
            "entrypoint": "tests.training.targets:hang_noting_pid",
            "workers": 2,
            "params": {"folder": folder, "seconds": 300},
        }
    )
