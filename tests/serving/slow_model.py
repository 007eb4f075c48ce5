"""A pyfunc model the server tests save: doubles ``x``, sleeping ``x`` seconds first when
``x`` is above 1 (to hold a request in flight)."""

from __future__ import annotations

import time

import mlflow
import numpy as np
import pandas as pd


class Slow(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(self, context: object, model_input: pd.DataFrame) -> np.ndarray:
        wait = float(model_input["x"].max())
        if wait > 1:
            time.sleep(wait)
        return (model_input["x"] * 2).to_numpy()
