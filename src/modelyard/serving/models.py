"""The models a server answers for: loaded from MLflow model URIs, predicted on the
native model where that is safe (:mod:`modelyard.serving.predictors`), and warmed up
before they are ready. :mod:`modelyard.serving.repository` keeps several of them within
a memory budget.

``models:/name@alias``, ``models:/name/3``, ``runs:/<run>/model`` and a local MLflow model
folder are accepted.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelyard.errors import (
    ModelyardError,
    NotFoundError,
)
from modelyard.serving.batching import Batcher, BatchTiming, timed_call
from modelyard.serving.tensors import TensorSpec, tensor_specs_from_signature

if TYPE_CHECKING:
    pass

from modelyard.serving.predictors import Predict, predictor

logger = logging.getLogger(__name__)

REGISTERED_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))?$")
_PLATFORMS = {"pyfunc": "mlflow_pyfunc", "onnx": "onnxruntime_onnx"}


class ModelLoadError(ModelyardError):
    """A model that cannot be found, read or warmed up (HTTP 400, as Triton answers a
    load that fails)."""

    http_status = 400
    default_code = "model/load_failed"


class ModelNotServedError(NotFoundError):
    default_code = "model/not_served"


@dataclass(frozen=True)
class Batching:
    """How one model's requests are merged (``max_batch_size=1`` turns it off)."""

    max_batch_size: int = 64
    max_latency_ms: float = 0.0


@dataclass(frozen=True)
class LoadOptions:
    """How every model of a server is fetched and served."""

    tracking_uri: str | None = None
    batching: Batching = field(default_factory=Batching)
    on_batch: Callable[[str, int], None] | None = None  # (model name, rows) per batch


@dataclass
class ServedModel:
    """One loaded model: what it takes and returns, and how to predict with it."""

    name: str
    version: str
    uri: str
    flavor: str  # what predict calls: "sklearn", "lightgbm", "xgboost", "onnx" or "pyfunc"
    platform: str  # V2 metadata: e.g. "sklearn", "onnxruntime_onnx", "mlflow_pyfunc"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    columns: list[str] | None  # a column signature's names, in order
    size_bytes: int  # the model's folder on disk
    predict_batch: Predict
    batcher: Batcher | None = None
    ready: bool = False
    in_flight: int = field(default=0)
    memory_bytes: int = 0  # the estimate the memory budget counts
    retiring: bool = False  # unloaded: closes when its last request is answered

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

    async def predict(self, rows: Any, timing: BatchTiming | None = None) -> Any:
        """The model's output for ``rows``, batched with concurrent requests when on;
        ``timing`` (when given) learns when the rows were queued and predicted."""
        if self.batcher is not None and not isinstance(rows, dict):
            return await self.batcher.predict(rows, timing)
        queued = time.time_ns()
        output, started, finished = await asyncio.get_running_loop().run_in_executor(
            None, timed_call, self.predict_batch, rows
        )
        if timing is not None:
            timing.queued_ns, timing.started_ns, timing.finished_ns = queued, started, finished
            timing.batch_rows = _row_count(rows)
        return output

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()


def _text(column: np.ndarray) -> np.ndarray:
    """BYTES tensors arrive as bytes; a pyfunc model's string columns want text."""
    if column.dtype == object and len(column) and isinstance(column[0], bytes):
        return np.array([v.decode() if isinstance(v, bytes) else v for v in column], dtype=object)
    return column


def _row_count(rows: Any) -> int:
    if isinstance(rows, dict):
        return len(next(iter(rows.values()), ()))
    return len(rows)


# -- loading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchedModel:
    """A model downloaded and its MLmodel read, not loaded yet."""

    name: str
    version: str
    uri: str
    path: Path
    meta: Any  # mlflow.models.Model
    size_bytes: int


def fetch_model(
    uri: str, *, name: str | None = None, tracking_uri: str | None = None
) -> FetchedModel:
    """Resolve and download the model at ``uri`` and read its MLmodel file.

    Raises:
        ModelLoadError: no such model, or it cannot be downloaded or read.
    """
    import mlflow
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    served_name, version = identity(uri, name, tracking_uri)
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
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return FetchedModel(served_name, version, uri, path, meta, size)


def open_model(fetched: FetchedModel, options: LoadOptions | None = None) -> ServedModel:
    """Load a fetched model, pick its fastest safe predict and warm it up.

    Raises:
        ModelLoadError: the model fails on its input example.
    """
    options = options or LoadOptions()
    meta, path = fetched.meta, fetched.path
    inputs, outputs = tensor_specs_from_signature(meta.signature)
    columns = _column_names(meta)
    flavor, predict = predictor(meta, path, inputs, columns)
    model = ServedModel(
        name=fetched.name,
        version=fetched.version,
        uri=fetched.uri,
        flavor=flavor,
        platform=_PLATFORMS.get(flavor, flavor),
        inputs=inputs,
        outputs=outputs,
        columns=columns,
        size_bytes=fetched.size_bytes,
        predict_batch=predict,
        memory_bytes=fetched.size_bytes,
    )
    _warm_up(model, meta, path)
    settings = options.batching
    if settings.max_batch_size > 1 and (columns or len(inputs) == 1):
        on_batch = options.on_batch
        model.batcher = Batcher(
            predict,
            max_batch_size=settings.max_batch_size,
            max_latency_ms=settings.max_latency_ms,
            on_batch=(lambda rows: on_batch(fetched.name, rows)) if on_batch else None,
        )
    model.ready = True
    return model


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
    options = LoadOptions(tracking_uri, batching or Batching(), on_batch)
    return open_model(fetch_model(uri, name=name, tracking_uri=tracking_uri), options)


def model_name(uri: str, tracking_uri: str | None = None) -> str:
    """The name the model at ``uri`` is served under when none is given.

    Raises:
        ModelLoadError: no such model.
    """
    return identity(uri, None, tracking_uri)[0]


def identity(uri: str, name: str | None, tracking_uri: str | None) -> tuple[str, str]:
    """The name a model is served under (``name`` if given) and its version; an alias
    or "latest" is resolved in the registry."""
    registered = REGISTERED_URI.match(uri)
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
        if isinstance(example, dict):  # several named tensors
            return {str(k): np.asarray(v) for k, v in example.items()}
        return np.asarray(example.to_numpy() if hasattr(example, "to_numpy") else example)
    if model.columns and model.flavor != "pyfunc":
        return np.zeros((1, len(model.columns)))
    return None
