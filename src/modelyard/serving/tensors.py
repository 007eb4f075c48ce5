"""Tensors on the wire: what the model server's protocols share.

The errors every decoder raises, :class:`TensorSpec` (a named tensor a model takes or
returns), the V2 datatypes and their numpy dtypes, JSON values to numpy arrays (checked
against an expected spec), and the model metadata documents built from an MLflow
signature.

Decisions:

* ``BYTES`` tensors decode to object arrays of ``bytes`` whether they came as JSON
  strings or as binary, so a model sees the same array whichever way the client sent
  it. Without an expected spec, ``instances``/``inputs`` strings stay ``str``.
* Against an expected :class:`TensorSpec`, a different datatype is accepted only when
  numpy can convert it without loss (``INT32`` -> ``FP64``, ``INT16`` -> ``FP32``,
  ``UINT8`` -> ``FP16``, ``INT8`` -> ``INT64``, ``FP32`` -> ``FP64``, ...), and the array is
  cast to the expected datatype. 64-bit integers never convert to ``FP64`` (53-bit
  mantissa), ``BOOL`` and ``BYTES`` never convert.
* A column signature (MLflow ``ColSpec``) becomes one tensor per column of shape
  ``[-1, 1]``, as MLServer's MLflow runtime and Triton's batched models with
  ``dims: [1]`` present it; a rank-1 tensor of ``N`` values is also accepted for such a
  spec and reshaped to ``[N, 1]``.
* An expected spec list that is ``None`` or empty means "no checks".
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from modelyard._version import __version__
from modelyard.errors import ExitCode, InvalidInputError, ModelyardError

if TYPE_CHECKING:
    from mlflow.models import ModelSignature
    from mlflow.types import Schema

Array = npt.NDArray[Any]


class ProtocolError(InvalidInputError):
    """A request body that does not follow its protocol (HTTP 400, as KServe and Triton
    answer it).

    ``details`` names the offending ``tensor`` or ``field``.
    """

    http_status = 400


class UnsupportedMediaError(ModelyardError):
    """A request body in a format the endpoint does not read (HTTP 415)."""

    http_status = 415
    exit_code = ExitCode.USAGE
    default_code = "request/unsupported_media_type"


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor a model takes or returns; ``-1`` in ``shape`` means any size."""

    name: str
    datatype: str
    shape: tuple[int, ...]


_DTYPES: Final[dict[str, np.dtype[Any]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
_INTEGER: Final = frozenset({int})
_JSON_TYPES: Final[dict[str, frozenset[type]]] = {
    **{name: _INTEGER for name in _DTYPES if "INT" in name},
    "BOOL": frozenset({bool}),
    "FP16": frozenset({int, float}),
    "FP32": frozenset({int, float}),
    "FP64": frozenset({int, float}),
    "BYTES": frozenset({str}),
}
_JSON_NAMES: Final[dict[type, str]] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    type(None): "null",
    dict: "object",
    list: "array",
}
_LENGTH: Final = struct.Struct("<I")


def _error(
    message: str,
    code: str = "request/invalid",
    *,
    tensor: str | None = None,
    field: str | None = None,
) -> ProtocolError:
    details: dict[str, Any] = {}
    if tensor is not None:
        details["tensor"] = tensor
    if field is not None:
        details["field"] = field
    return ProtocolError(message, code=code, details=details)


def _load_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _error(f"request body is not JSON: {exc}", field="$") from exc


def _object_field(doc: Mapping[str, Any], key: str, field: str) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _error(f"{field} must be a JSON object", field=field)
    return value


def _datatype_of(dtype: np.dtype[Any]) -> str | None:
    kind, bits = dtype.kind, dtype.itemsize * 8
    if kind == "b":
        return "BOOL"
    if kind in "iu" and bits in (8, 16, 32, 64):
        return f"{'INT' if kind == 'i' else 'UINT'}{bits}"
    if kind == "f" and bits in (16, 32, 64):
        return f"FP{bits}"
    if kind in "OUS":
        return "BYTES"
    return None


def _lossless(source: str, target: str) -> bool:
    if {source, target} & {"BOOL", "BYTES"}:
        return False
    src, dst = _DTYPES[source], _DTYPES[target]
    if not np.can_cast(src, dst, "safe"):
        return False
    # numpy calls INT64 -> FP64 "safe", but FP64 holds 53 bits of an integer, not 64.
    return not (src.kind in "iu" and dst.kind == "f" and src.itemsize * 8 > np.finfo(dst).nmant + 1)


# -- JSON arrays -> numpy ---------------------------------------------------------------


def _rectangular(value: list[Any], name: str) -> tuple[list[int], list[Any]]:
    """The shape of nested JSON arrays and their leaves in row-major order."""
    shape, level = [len(value)], value
    while level and isinstance(level[0], list):
        width = len(level[0])
        if not all(isinstance(item, list) and len(item) == width for item in level):
            raise _error(
                f"input '{name}' is ragged: nested arrays must all have the same length",
                "request/shape",
                tensor=name,
            )
        shape.append(width)
        level = [leaf for item in level for leaf in item]
    return shape, level


def _array_from_values(values: list[Any], datatype: str, name: str) -> Array:
    kinds = set(map(type, values))
    if not kinds <= _JSON_TYPES[datatype]:
        found = ", ".join(sorted(_JSON_NAMES.get(k, k.__name__) for k in kinds))
        raise _error(
            f"input '{name}' is {datatype} but its data holds JSON values of type {found}",
            "request/datatype",
            tensor=name,
        )
    if datatype == "BYTES":
        try:
            encoded = [text.encode("utf-8") for text in values]
        except UnicodeEncodeError as exc:
            raise _error(
                f"input '{name}' holds a string that is not valid Unicode",
                "request/datatype",
                tensor=name,
            ) from exc
        return _object_array(encoded)
    try:
        with np.errstate(over="raise"):
            return np.array(values, dtype=_DTYPES[datatype])
    except (OverflowError, FloatingPointError, ValueError) as exc:
        raise _error(
            f"input '{name}' holds a value out of range for {datatype}",
            "request/datatype",
            tensor=name,
        ) from exc


def _object_array(items: list[Any]) -> Array:
    # Filling an empty object array keeps numpy from looking inside the items.
    array = np.empty(len(items), dtype=np.object_)
    array[:] = items
    return array


def _reshape(array: Array, shape: Sequence[int], name: str) -> Array:
    try:
        return array.reshape(shape)
    except (ValueError, OverflowError) as exc:
        raise _error(
            f"input '{name}' has shape {list(shape)}, which numpy cannot represent",
            "request/shape",
            tensor=name,
        ) from exc


def _check_names(names: Sequence[str], specs: Mapping[str, TensorSpec]) -> None:
    known = ", ".join(specs)
    for name in names:
        if name not in specs:
            raise _error(
                f"the model has no input '{name}'; it takes {known}",
                "request/unknown_input",
                tensor=name,
            )
    present = set(names)
    for name in specs:
        if name not in present:
            raise _error(
                f"the request lacks input '{name}'; the model takes {known}",
                "request/missing_input",
                tensor=name,
            )


def _conform(name: str, array: Array, datatype: str, spec: TensorSpec) -> Array:
    if datatype != spec.datatype:
        if not _lossless(datatype, spec.datatype):
            raise _error(
                f"input '{name}' is {datatype} but the model expects {spec.datatype}",
                "request/datatype",
                tensor=name,
            )
        array = array.astype(_DTYPES[spec.datatype])
    got = array.shape
    if len(spec.shape) == 2 and spec.shape[1] == 1 and array.ndim == 1:
        array = array.reshape(-1, 1)  # a column sent as a plain vector
    if array.ndim != len(spec.shape) or any(
        want not in (-1, have) for want, have in zip(spec.shape, array.shape, strict=True)
    ):
        raise _error(
            f"input '{name}' has shape {list(got)} but the model expects "
            f"{list(spec.shape)} (-1 = any size)",
            "request/shape",
            tensor=name,
        )
    return array


# -- metadata --------------------------------------------------------------------------


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def _spec_json(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def server_metadata() -> bytes:
    """The V2 server metadata document (``GET /v2``)."""
    return _dumps(
        {"name": "modelyard", "version": __version__, "extensions": ["binary_tensor_data"]}
    )


def model_metadata(
    name: str,
    versions: Sequence[str],
    platform: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
) -> bytes:
    """The V2 model metadata document (``GET /v2/models/<name>[/versions/<v>]``)."""
    return _dumps(
        {
            "name": name,
            "versions": list(versions),
            "platform": platform,
            "inputs": [_spec_json(spec) for spec in inputs],
            "outputs": [_spec_json(spec) for spec in outputs],
        }
    )


_COLUMN_DATATYPES: Final[dict[str, str]] = {
    "boolean": "BOOL",
    "integer": "INT32",
    "long": "INT64",
    "float": "FP32",
    "double": "FP64",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",  # ISO 8601 text
}


def _specs_from_schema(schema: Schema | None, prefix: str) -> list[TensorSpec]:
    from mlflow.types.schema import DataType
    from mlflow.types.schema import TensorSpec as MlflowTensorSpec

    specs: list[TensorSpec] = []
    for index, item in enumerate(schema.inputs if schema is not None else []):
        name = item.name or f"{prefix}-{index}"
        if isinstance(item, MlflowTensorSpec):
            datatype = _datatype_of(item.type)
            if datatype is None:
                raise ModelyardError(
                    f"signature tensor '{name}' has numpy dtype {item.type}, which the "
                    "Open Inference Protocol cannot carry",
                    code="serving/unsupported_signature",
                    details={"tensor": name},
                )
            specs.append(TensorSpec(name, datatype, tuple(int(d) for d in item.shape)))
        else:
            # Arrays, objects, maps and "any" columns travel as JSON text, one per row.
            kind = item.type.name if isinstance(item.type, DataType) else ""
            specs.append(TensorSpec(name, _COLUMN_DATATYPES.get(kind, "BYTES"), (-1, 1)))
    return specs


def tensor_specs_from_signature(
    signature: ModelSignature | None,
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The V2 input and output tensors of an MLflow model signature.

    A tensor signature gives one spec per tensor with its dtype and shape; a column
    signature gives one ``[-1, 1]`` tensor per column (see the module docstring).
    Unnamed tensors are called ``input-<i>`` / ``output-<i>``, as in MLServer.

    Raises:
        ModelyardError: A tensor dtype with no V2 datatype (``serving/unsupported_signature``).
    """
    if signature is None:
        return [], []
    inputs = _specs_from_schema(signature.inputs, "input")
    return inputs, _specs_from_schema(signature.outputs, "output")
