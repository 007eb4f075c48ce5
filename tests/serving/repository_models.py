"""A pyfunc model the model-repository and tracing tests save: slow to answer, slow to
load, hungry for memory or failing, as they need."""

from __future__ import annotations

import time

import mlflow
import numpy as np
import pandas as pd


class Doubler(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Doubles ``x``; sleeps ``x`` seconds first when ``x`` is above 1 (to hold a request
    in flight) and raises on a negative ``x``; loading takes
    ``model_config["load_seconds"]`` and holds ``model_config["megabytes"]`` of memory."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        config = context.model_config or {}
        time.sleep(float(config.get("load_seconds", 0)))
        megabytes = float(config.get("megabytes", 0))
        self.ballast = np.ones(int(megabytes * 2**20) // 8)  # written, so resident

    def __getstate__(self) -> dict[str, object]:  # saved without what loading allocates
        return {k: v for k, v in self.__dict__.items() if k != "ballast"}

    def predict(self, context: object, model_input: pd.DataFrame) -> np.ndarray:
        if (model_input["x"] < 0).any():
            raise ValueError("negative input")
        wait = float(model_input["x"].max())
        if wait > 1:
            time.sleep(wait)
        return (model_input["x"] * 2).to_numpy()
