"""A pipeline that scores a table with a model (tests run it with ``modelyard run``)."""

from __future__ import annotations

import pyarrow as pa

from modelyard.pipelines.pipeline import pipeline
from modelyard.pipelines.task import task
from modelyard.serving.tasks import batch_predict


@task
def rows(n: int) -> pa.Table:
    return pa.table({"a": [float(i) for i in range(n)], "b": [1.0] * n})


@pipeline
def score(model: str, n: int = 5) -> None:
    batch_predict(model, rows(n), batch_size=2)
