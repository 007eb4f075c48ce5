"""Predict functions for loaded models: the native model on numpy arrays where that is
safe (scikit-learn, LightGBM and XGBoost with an all-numeric signature, ONNX through an
onnxruntime session fed the signature's tensors), else MLflow's pyfunc."""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelyard.serving.tensors import TensorSpec

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

_NUMERIC = frozenset(
    {
        "BOOL",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "FP16",
        "FP32",
        "FP64",
    }
)

Predict = Callable[[Any], Any]


def predictor(
    meta: Any, path: Path, inputs: list[TensorSpec], columns: list[str] | None
) -> tuple[str, Predict]:
    """The fastest safe predict: the native model on numpy arrays when the flavour is
    scikit-learn, LightGBM, XGBoost or ONNX, every input is numeric and the native model
    can take the signature's inputs as they are; else MLflow's pyfunc."""
    if inputs and all(spec.datatype in _NUMERIC for spec in inputs):
        for flavor, native in _NATIVE.items():
            if flavor in meta.flavors:
                predict = native(meta, path, inputs, columns)
                if predict is not None:
                    return flavor, predict
    import mlflow.pyfunc

    pyfunc = mlflow.pyfunc.load_model(str(path))
    return "pyfunc", pyfunc.predict


def _sklearn(meta: Any, path: Path, inputs: list[TensorSpec], columns: list[str] | None) -> Predict:
    import mlflow.sklearn

    return _quiet(mlflow.sklearn.load_model(str(path)).predict)


def _lightgbm(
    meta: Any, path: Path, inputs: list[TensorSpec], columns: list[str] | None
) -> Predict:
    import mlflow.lightgbm

    return _quiet(mlflow.lightgbm.load_model(str(path)).predict)


def _xgboost(
    meta: Any, path: Path, inputs: list[TensorSpec], columns: list[str] | None
) -> Predict | None:
    """A booster or scikit-learn-API model called on the array, its feature-name check
    off: the array's columns are the signature's, which must be the ones it was trained
    on, in that order (else ``None``: pyfunc matches them by name)."""
    import mlflow.xgboost
    import xgboost

    native = mlflow.xgboost.load_model(str(path))
    booster = native if isinstance(native, xgboost.Booster) else native.get_booster()
    trained_on = booster.feature_names
    if trained_on is not None and list(trained_on) != columns:
        return None
    if isinstance(native, xgboost.Booster):
        # What pyfunc's booster.predict(DMatrix(frame)) computes, without the DMatrix.
        return functools.partial(native.inplace_predict, validate_features=False)
    return functools.partial(native.predict, validate_features=False)


_ONNX_DTYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


class _OnnxPredict:
    """An onnxruntime session fed as MLflow's ONNX pyfunc feeds it, and answering as it
    answers: a DataFrame (one flattened column per output) for a column signature or a
    DataFrame input, else a dict of the output tensors.

    A column signature's array feeds the model's one input whole, or, when the model
    has several inputs, each input the column of its name. Inputs are cast to the
    model's dtypes where numpy calls that safe or same-kind (``FP64`` -> ``FP32``).
    """

    def __init__(self, session: Any, columns: list[str] | None) -> None:
        self.session = session
        self.columns = columns
        self.inputs = [(i.name, _ONNX_DTYPES[i.type]) for i in session.get_inputs()]
        self.outputs = [o.name for o in session.get_outputs()]
        names = [name for name, _ in self.inputs]
        self._positions = [columns.index(n) for n in names] if columns and len(names) > 1 else []

    def __call__(self, data: Any) -> Any:
        frame = hasattr(data, "columns")
        first = self.inputs[0][0]
        if isinstance(data, dict):
            feeds = {name: data[name] for name, _ in self.inputs}
        elif frame:
            feeds = (
                {first: data.to_numpy()}
                if len(self.inputs) == 1
                else {name: data[name].to_numpy() for name, _ in self.inputs}
            )
        elif len(self.inputs) > 1:  # a column signature's array, a column per input
            feeds = {
                name: data[:, position]
                for (name, _), position in zip(self.inputs, self._positions, strict=True)
            }
        else:
            feeds = {first: data}
        for name, dtype in self.inputs:
            feeds[name] = _cast(np.asarray(feeds[name]), dtype)
        results = self.session.run(self.outputs, feeds)
        if self.columns or frame:
            import pandas as pd  # type: ignore[import-untyped]

            flat = {
                n: np.asarray(r).reshape(-1) for n, r in zip(self.outputs, results, strict=True)
            }
            return pd.DataFrame(flat)
        return dict(zip(self.outputs, results, strict=True))


def _cast(array: np.ndarray, dtype: type[np.generic]) -> np.ndarray:
    if array.dtype != dtype and np.can_cast(array.dtype, dtype, "same_kind"):
        return array.astype(dtype)
    return array


def _onnx(
    meta: Any, path: Path, inputs: list[TensorSpec], columns: list[str] | None
) -> Predict | None:
    """An onnxruntime session, when the signature's inputs can feed the model's: a
    column signature feeds one input whole or several by column name; a tensor
    signature feeds them by name (or one to one)."""
    import onnxruntime  # type: ignore[import-untyped]

    session = _onnx_session(onnxruntime, path, meta.flavors["onnx"])
    names = [i.name for i in session.get_inputs()]
    if any(i.type not in _ONNX_DTYPES for i in session.get_inputs()):
        return None
    if columns is not None:
        fits = len(names) == 1 or set(names) <= set(columns)
    else:
        fits = len(inputs) == len(names) and (
            len(names) == 1 or {spec.name for spec in inputs} == set(names)
        )
    return _OnnxPredict(session, columns) if fits else None


def _onnx_session(onnxruntime: Any, path: Path, flavor: dict[str, Any]) -> Any:
    """A session as MLflow's ONNX flavour configures it (providers, session options),
    except that the intra-op threads default to ``OMP_NUM_THREADS`` (``serve
    --model-threads``): threads that spin between small batches starve the request loop."""
    configured = flavor.get("onnx_session_options") or {}
    options = onnxruntime.SessionOptions()
    threads = configured.get("intra_op_num_threads") or os.environ.get("OMP_NUM_THREADS")
    if threads:
        options.intra_op_num_threads = int(threads)
    if configured.get("inter_op_num_threads"):
        options.inter_op_num_threads = int(configured["inter_op_num_threads"])
    if str(configured.get("execution_mode", "")).upper() == "PARALLEL":
        options.execution_mode = onnxruntime.ExecutionMode.ORT_PARALLEL
    if configured.get("graph_optimization_level") is not None:
        level = configured["graph_optimization_level"]
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel(level)
    for key, value in (configured.get("extra_session_config") or {}).items():
        options.add_session_config_entry(key, value)
    available = set(onnxruntime.get_available_providers())
    declared = flavor.get("providers") or ["CPUExecutionProvider"]
    declared = [declared] if isinstance(declared, str) else declared
    providers = [
        tuple(p) if isinstance(p, list) else p
        for p in declared
        if (p if isinstance(p, str) else p[0]) in available
    ]
    return onnxruntime.InferenceSession(
        str(path / flavor["data"]),
        sess_options=options,
        providers=providers or ["CPUExecutionProvider"],
    )


_NATIVE: dict[str, Callable[[Any, Path, list[TensorSpec], list[str] | None], Predict | None]] = {
    "sklearn": _sklearn,
    "lightgbm": _lightgbm,
    "xgboost": _xgboost,
    "onnx": _onnx,
}


def _quiet(predict: Predict) -> Predict:
    """A native predict on arrays: models fitted on DataFrames warn that arrays carry no
    feature names, once per call; the columns are in the signature's order."""
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    return predict
