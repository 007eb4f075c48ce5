"""Pipelines the Kubernetes runtime's tests run in pods (local processes here)."""

from __future__ import annotations

import os

from modelyard.pipelines.pipeline import pipeline
from modelyard.pipelines.task import task


@task(secrets=["WAREHOUSE_TOKEN"])
def reads_secret() -> str:
    return os.environ["WAREHOUSE_TOKEN"]


@pipeline
def secret_flow() -> None:
    reads_secret()
