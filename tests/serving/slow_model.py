"""A pyfunc model the server tests save: doubles ``x``, sleeping ``x`` seconds first when
``x`` is above 1 (to hold a request in flight)."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd


class Slow(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(self, context: object, model_input: pd.DataFrame) -> np.ndarray:
        wait = float(model_input["x"].max())
        if wait > 1:
            time.sleep(wait)
        return (model_input["x"] * 2).to_numpy()


class Flaky(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Doubles ``x``. A chunk holding ``x == 13`` fails while the file named by
    ``FLAKY_FILE`` has fewer than ``FLAKY_FAILURES`` lines (one is added per failure)."""

    def predict(self, context: object, model_input: pd.DataFrame) -> np.ndarray:
        import os
        from pathlib import Path

        if (model_input["x"] == 13).any():
            record = Path(os.environ["FLAKY_FILE"])
            failures = len(record.read_text().splitlines()) if record.exists() else 0
            if failures < int(os.environ["FLAKY_FAILURES"]):
                with record.open("a") as handle:
                    handle.write("failed\n")
                raise RuntimeError("a flaky dependency")
        return (model_input["x"] * 2).to_numpy()


class Triple(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Triples ``x``: a second version that answers differently."""

    def predict(self, context: object, model_input: pd.DataFrame) -> np.ndarray:
        return (model_input["x"] * 3).to_numpy()


class Broken(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Passes its warm-up (``x`` of 0.1), then raises for any ``x`` above 0.5."""

    def predict(self, context: object, model_input: pd.DataFrame) -> np.ndarray:
        if (model_input["x"] > 0.5).any():
            raise ValueError("a broken release")
        return (model_input["x"] * 2).to_numpy()


def save_models(folder: Path) -> dict[str, str]:
    """MLflow model folders of ``double`` (Slow), ``triple`` and ``broken``, by name."""
    example = pd.DataFrame({"x": [0.1]})
    folders = {}
    for name, model in (("double", Slow()), ("triple", Triple()), ("broken", Broken())):
        mlflow.pyfunc.save_model(
            folder / name, python_model=model, input_example=example, pip_requirements=["mlflow"]
        )
        folders[name] = str(folder / name)
    return folders
