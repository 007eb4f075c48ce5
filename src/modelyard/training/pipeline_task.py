"""A training job as a pipeline task.

    from modelyard.training.pipeline_task import training_job

    @pipeline
    def churn(epochs: int = 5):
        table = features()
        training_job({"name": "churn", "entrypoint": "train.py:main", "workers": 2,
                      "params": {"epochs": epochs, "rows": table_rows(table)}})

The job's gang runs inside the task, with the same wiring, checkpoints and failure policy
as ``modelyard train submit``; its workers log to the task's MLflow run, so the run
carries the pipeline's lineage (input digests, pipeline run, task). Checkpoints live in a
folder of the pipeline run and task, so a retried task resumes from them. The task is
never cached: its result depends on the entrypoint's code, which the task's own code
fingerprint does not cover. Secrets the job needs are the task's
(``training_job.with_options(secrets=[...])``): the gang inherits the task's environment.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from modelyard.config import Settings
from modelyard.errors import InvalidInputError, ModelyardError
from modelyard.pipelines.execute import current_context
from modelyard.pipelines.task import task
from modelyard.specs.training import TrainingJobSpec
from modelyard.training import tracking
from modelyard.training.launch import GangAttempt, GangLauncher, GangOutcome, cancel_on_sigterm

logger = logging.getLogger(__name__)


class TrainingJobFailedError(ModelyardError):
    """The job's gang failed for good (its failure policy gave up)."""

    default_code = "job/failed"


@task(track=True, cache=False)
def training_job(job: dict[str, Any]) -> Any:
    """Run a training job (a ``TrainingJobSpec`` as a dict) and return rank 0's result."""
    try:
        spec = TrainingJobSpec.model_validate(job)
    except ValidationError as exc:
        raise InvalidInputError(f"invalid training job: {exc}", code="job/invalid") from exc
    context = current_context()
    suffix = f"[{context.map_index}]" if context.map_index >= 0 else ""
    workdir = Settings().home / "jobs" / f"{context.run_id}-{context.task}{suffix}"
    env: dict[str, str] = {}
    if tracking.mlflow_available():
        import mlflow

        active = mlflow.active_run()
        if active is not None:
            env = {**tracking.TrackingConfig.current().env(), "MLFLOW_RUN_ID": active.info.run_id}

    def show(attempt: GangAttempt) -> None:
        then = "restarting" if attempt.retried else "ended"
        logger.info("job %s attempt %s: %s (%s)", spec.name, attempt.number, attempt.reason, then)

    with cancel_on_sigterm() as cancel:
        result = GangLauncher(spec, workdir, env=env, cancel=cancel, on_attempt=show).run()
    if result.outcome is not GangOutcome.SUCCEEDED:
        raise TrainingJobFailedError(
            f"training job {spec.name!r} {result.outcome.value} after "
            f"{len(result.attempts)} attempt(s): {result.reason}",
            details={"job": spec.name, "outcome": result.outcome.value},
        )
    return result.result
