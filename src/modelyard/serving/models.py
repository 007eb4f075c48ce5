"""The models a server answers for: loaded from MLflow model URIs, predicted on the
native model where that is safe, warmed up before they are ready.

``models:/name@alias``, ``models:/name/3``, ``runs:/<run>/model`` and a local MLflow model
folder are accepted. scikit-learn and LightGBM models whose signature is all numeric
are called directly on a numpy array (no pandas round trip); every other model goes
through MLflow's pyfunc on a DataFrame (column signatures) or its tensors.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import ModelyardError
from modelyard.serving.batching import Batcher
from modelyard.serving.tensors import TensorSpec, tensor_specs_from_signature

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
_REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))?$")


class ModelLoadError(ModelyardError):
    """A model that cannot be found, read or warmed up."""

    default_code = "model/load_failed"


@dataclass(frozen=True)
class Batching:
    """How one model's requests are merged (``max_batch_size=1`` turns it off)."""

    max_batch_size: int = 64
    max_latency_ms: float = 0.0


@dataclass
class ServedModel:
    """One loaded model: what it takes and returns, and how to predict with it."""

    name: str
    version: str
    uri: str
    flavor: str  # "sklearn", "lightgbm" or "pyfunc": what predict calls
    platform: str  # V2 metadata: e.g. "sklearn", "mlflow_pyfunc"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    columns: list[str] | None  # a column signature's names, in order
    size_bytes: int
    predict_batch: Callable[[Any], Any]
    batcher: Batcher | None = None
    ready: bool = False
    in_flight: int = field(default=0)

    def rows(self, tensors: dict[str, np.ndarray]) -> Any:
        """The model's input batch from decoded V2 tensors: per-column ``[N, 1]``
        tensors side by side in the signature's order (a numpy array for the native
        path, a DataFrame for pyfunc), or the tensor itself for a one-tensor model."""
        if self.columns:
            parts = [tensors[c].reshape(len(tensors[c]), -1)[:, 0] for c in self.columns]
            if self.flavor != "pyfunc":
                return np.column_stack(parts)
            import pandas as pd  # type: ignore[import-untyped]

            return pd.DataFrame(dict(zip(self.columns, map(_text, parts), strict=True)))
        if len(tensors) == 1:
            return next(iter(tensors.values()))
        return tensors

    async def predict(self, rows: Any) -> Any:
        """The model's output for ``rows``, batched with concurrent requests when on."""
        if self.batcher is not None and not isinstance(rows, dict):
            return await self.batcher.predict(rows)
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(None, self.predict_batch, rows)

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()


def _text(column: np.ndarray) -> np.ndarray:
    """BYTES tensors arrive as bytes; a pyfunc model's string columns want text."""
    if column.dtype == object and len(column) and isinstance(column[0], bytes):
        return np.array([v.decode() if isinstance(v, bytes) else v for v in column], dtype=object)
    return column


def load_model(
    uri: str,
    *,
    name: str | None = None,
    tracking_uri: str | None = None,
    batching: Batching | None = None,
    on_batch: Callable[[str, int], None] | None = None,
) -> ServedModel:
    """Download, load and warm up the model at ``uri``.

    Raises:
        ModelLoadError: the model cannot be found, loaded, or predict on its example.
    """
    import mlflow
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    served_name, version = _identity(uri, name, tracking_uri)
    if tracking_uri is not None:  # models:/ URIs resolve through the process's registry
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    try:
        path = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=uri)
            if "://" in uri or uri.startswith(("models:/", "runs:/"))
            else uri
        )
        meta = Model.load(str(path))
    except (MlflowException, OSError) as exc:
        raise ModelLoadError(f"cannot load model {uri!r}: {exc}") from exc
    inputs, outputs = tensor_specs_from_signature(meta.signature)
    columns = _column_names(meta)
    flavor, predict = _predictor(meta, path, inputs)
    model = ServedModel(
        name=served_name,
        version=version,
        uri=uri,
        flavor=flavor,
        platform="mlflow_pyfunc" if flavor == "pyfunc" else flavor,
        inputs=inputs,
        outputs=outputs,
        columns=columns,
        size_bytes=sum(f.stat().st_size for f in path.rglob("*") if f.is_file()),
        predict_batch=predict,
    )
    _warm_up(model, meta, path)
    settings = batching or Batching()
    if settings.max_batch_size > 1 and (columns or len(inputs) == 1):
        model.batcher = Batcher(
            predict,
            max_batch_size=settings.max_batch_size,
            max_latency_ms=settings.max_latency_ms,
            on_batch=(lambda rows: on_batch(served_name, rows)) if on_batch else None,
        )
    model.ready = True
    return model


def _identity(uri: str, name: str | None, tracking_uri: str | None) -> tuple[str, str]:
    """The name a model is served under and its version."""
    registered = _REGISTERED.match(uri)
    if registered is not None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        model_name = registered["name"]
        if registered["version"]:
            return name or model_name, registered["version"]
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        try:
            if registered["alias"]:
                found = client.get_model_version_by_alias(model_name, registered["alias"])
            else:
                found = client.search_model_versions(
                    f"name = '{model_name}'", order_by=["version_number DESC"], max_results=1
                )[0]
        except (MlflowException, IndexError) as exc:
            raise ModelLoadError(f"no model version at {uri!r}: {exc}") from exc
        return name or model_name, str(found.version)
    if uri.startswith("runs:/"):
        run_id = uri.removeprefix("runs:/").partition("/")[0]
        return name or "model", run_id[:8]
    folder = Path(uri)
    if not (folder / "MLmodel").is_file():
        raise ModelLoadError(
            f"{uri!r} is neither a models:/ or runs:/ URI nor a folder with an MLmodel file",
            code="model/not_found",
        )
    return name or folder.resolve().name, "1"


def _column_names(meta: Any) -> list[str] | None:
    signature = meta.signature
    if signature is None or signature.inputs is None:
        return None
    if signature.inputs.is_tensor_spec():
        return None
    names = signature.inputs.input_names()
    return [str(n) for n in names] if all(names) else None


def _predictor(meta: Any, path: Path, inputs: list[TensorSpec]) -> tuple[str, Callable[[Any], Any]]:
    """The fastest safe predict: the native model on numpy arrays when the flavour is
    scikit-learn or LightGBM and every input is numeric, else MLflow's pyfunc."""
    numeric = bool(inputs) and all(spec.datatype in _NUMERIC for spec in inputs)
    if numeric and "sklearn" in meta.flavors:
        import mlflow.sklearn

        native = mlflow.sklearn.load_model(str(path))
        return "sklearn", _quiet(native.predict)
    if numeric and "lightgbm" in meta.flavors:
        import mlflow.lightgbm

        native = mlflow.lightgbm.load_model(str(path))
        return "lightgbm", _quiet(native.predict)
    import mlflow.pyfunc

    pyfunc = mlflow.pyfunc.load_model(str(path))
    return "pyfunc", pyfunc.predict


def _quiet(predict: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A native predict on arrays: models fitted on DataFrames warn that arrays carry no
    feature names, once per call; the columns are in the signature's order."""
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    return predict


def _warm_up(model: ServedModel, meta: Any, path: Path) -> None:
    """One prediction on the logged input example (or on zeros of the signature's
    shape), so that the first request pays no first-call costs; a model that cannot
    predict on it never becomes ready."""
    example = _example(model, meta, path)
    if example is None:
        return
    try:
        model.predict_batch(example)
    except Exception as exc:
        raise ModelLoadError(
            f"model {model.name!r} failed on its input example while warming up: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _example(model: ServedModel, meta: Any, path: Path) -> Any:
    try:
        example = meta.load_input_example(str(path))
    except Exception:  # an unreadable example: warm up on zeros instead
        example = None
    if example is not None:
        if model.flavor == "pyfunc":
            return example
        return np.asarray(example.to_numpy() if hasattr(example, "to_numpy") else example)
    if model.columns and model.flavor != "pyfunc":
        return np.zeros((1, len(model.columns)))
    return None
