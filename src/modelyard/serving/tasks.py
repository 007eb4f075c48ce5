"""Batch prediction as a pipeline task.

from modelyard.serving.tasks import batch_predict

@pipeline
def score():
    batch_predict("models:/taxi-fare@champion", features(...))
"""

from __future__ import annotations

from typing import Any

from modelyard.pipelines.task import task
from modelyard.serving.batch import predict_table
from modelyard.serving.models import Batching, load_model
from modelyard.training.tracking import TrackingConfig


@task(cache=False)
def batch_predict(model_uri: str, table: Any, batch_size: int = 10_000) -> Any:
    """``table`` with a ``prediction`` column from the model at ``model_uri`` (never
    cached: an alias may point at another version tomorrow)."""
    model = load_model(
        model_uri,
        tracking_uri=TrackingConfig.current().tracking_uri,
        batching=Batching(max_batch_size=1),
    )
    return predict_table(model, table, batch_size=batch_size)
