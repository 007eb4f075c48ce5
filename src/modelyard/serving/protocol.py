"""Wire formats of the model server, as pure functions over bytes.

Three request dialects are decoded here, and their answers encoded:

* the Open Inference Protocol (KServe V2, what ``tritonclient.http`` speaks), including
  Triton's binary tensor data extension (``binary_data_size`` parameters and the
  ``Inference-Header-Content-Length`` header);
* the TF-serving / KServe V1 body, ``{"instances": [...]}`` (rows) or
  ``{"inputs": {...}}`` (columns);
* MLflow's ``/invocations`` body, parsed the way ``mlflow.pyfunc.scoring_server`` does
  without a schema (``dataframe_split``, ``dataframe_records``, ``instances``,
  ``inputs``, CSV, Parquet).

No HTTP framework is involved: the server passes the raw body and the headers it needs,
and sends the bytes these functions return.

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

import base64
import datetime
import json
import math
import struct
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO, StringIO
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt
import pydantic

from modelyard._version import __version__
from modelyard.errors import ExitCode, InvalidInputError, ModelyardError

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]
    from mlflow.models import ModelSignature
    from mlflow.types import Schema

__all__ = [
    "InferRequest",
    "InvocationsInput",
    "ProtocolError",
    "TensorSpec",
    "UnsupportedMediaError",
    "decode_instances",
    "decode_invocations",
    "decode_v2",
    "encode_predictions",
    "encode_v2",
    "model_metadata",
    "server_metadata",
    "tensor_specs_from_signature",
]

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


@dataclass
class InferRequest:
    """A decoded V2 inference request.

    ``binary_outputs`` is ``True``/``False`` for all outputs, or the names of the
    outputs the client wants as binary data; pass it to :func:`encode_v2` unchanged.
    """

    id: str | None
    inputs: dict[str, Array]
    outputs_wanted: list[str] | None
    binary_outputs: set[str] | bool
    parameters: dict[str, Any]


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


# -- Open Inference Protocol (V2) ------------------------------------------------------


class _InputHeader(NamedTuple):
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any
    binary_size: int | None


def _input_header(item: Any, index: int) -> _InputHeader:
    field = f"inputs[{index}]"
    if not isinstance(item, dict):
        raise _error(f"{field} must be a JSON object", field=field)
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise _error(f"{field}.name must be a non-empty string", field=f"{field}.name")
    datatype = item.get("datatype")
    if not isinstance(datatype, str) or datatype not in _DTYPES:
        raise _error(
            f"input '{name}' has datatype {datatype!r}; expected one of {', '.join(_DTYPES)}",
            "request/datatype",
            tensor=name,
        )
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise _error(
            f"input '{name}' needs a shape: a JSON array of non-negative integers",
            "request/shape",
            tensor=name,
        )
    parameters = _object_field(item, "parameters", f"{field}.parameters")
    if any(key.startswith("shared_memory") for key in parameters):
        raise _error(f"input '{name}' uses shared memory, which is not supported", tensor=name)
    size = parameters.get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0:
            raise _error(
                f"input '{name}' has a binary_data_size that is not a non-negative integer",
                tensor=name,
            )
        if "data" in item:
            raise _error(f"input '{name}' has both data and binary_data_size", tensor=name)
    elif "data" not in item:
        raise _error(f"input '{name}' has neither data nor binary_data_size", tensor=name)
    return _InputHeader(name, datatype, tuple(shape), item.get("data"), size)


def _split_bytes_elements(blob: memoryview, name: str) -> list[bytes]:
    elements: list[bytes] = []
    offset, end = 0, len(blob)
    while offset < end:
        if end - offset < _LENGTH.size:
            raise _error(
                f"input '{name}': BYTES element {len(elements)} has a truncated 4-byte length",
                tensor=name,
            )
        (length,) = _LENGTH.unpack_from(blob, offset)
        offset += _LENGTH.size
        if length > end - offset:
            raise _error(
                f"input '{name}': BYTES element {len(elements)} claims {length} bytes "
                f"but only {end - offset} remain in its binary data",
                tensor=name,
            )
        elements.append(bytes(blob[offset : offset + length]))
        offset += length
    return elements


def _array_from_binary(header: _InputHeader, blob: memoryview) -> Array:
    name, datatype, count = header.name, header.datatype, math.prod(header.shape)
    if datatype == "BYTES":
        elements = _split_bytes_elements(blob, name)
        if len(elements) != count:
            raise _error(
                f"input '{name}' has {len(elements)} BYTES elements but shape "
                f"{list(header.shape)} needs {count}",
                "request/shape",
                tensor=name,
            )
        return _reshape(_object_array(elements), header.shape, name)
    wire = _DTYPES[datatype].newbyteorder("<")
    if len(blob) != count * wire.itemsize:
        raise _error(
            f"input '{name}' has {len(blob)} bytes of binary data but shape "
            f"{list(header.shape)} of {datatype} needs {count * wire.itemsize}",
            "request/shape",
            tensor=name,
        )
    if datatype == "BOOL" and len(blob) and np.frombuffer(blob, dtype=np.uint8).max() > 1:
        raise _error(f"input '{name}' is BOOL but holds bytes other than 0 and 1", tensor=name)
    # A copy, so the model gets a writable array that does not pin the request body.
    array = np.frombuffer(blob, dtype=wire).astype(_DTYPES[datatype], copy=True)
    return _reshape(array, header.shape, name)


def _array_from_data(header: _InputHeader) -> Array:
    name = header.name
    if not isinstance(header.data, list):
        raise _error(f"input '{name}': data must be a JSON array", tensor=name)
    _, values = _rectangular(header.data, name)
    count = math.prod(header.shape)
    if len(values) != count:
        raise _error(
            f"input '{name}' has {len(values)} elements but shape {list(header.shape)} "
            f"needs {count}",
            "request/shape",
            tensor=name,
        )
    return _reshape(_array_from_values(values, header.datatype, name), header.shape, name)


def _requested_outputs(
    raw: Any, parameters: Mapping[str, Any]
) -> tuple[list[str] | None, set[str] | bool]:
    default = parameters.get("binary_data_output", False)
    if not isinstance(default, bool):
        raise _error(
            "parameters.binary_data_output must be a boolean", field="parameters.binary_data_output"
        )
    if raw is None:
        return None, default
    if not isinstance(raw, list):
        raise _error("outputs must be a JSON array", field="outputs")
    names: list[str] = []
    binary: set[str] = set()
    for index, item in enumerate(raw):
        field = f"outputs[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise _error(f"{field} must be a JSON object with a name", field=field)
        name = item["name"]
        options = _object_field(item, "parameters", f"{field}.parameters")
        if "classification" in options or any(k.startswith("shared_memory") for k in options):
            raise _error(
                f"output '{name}' asks for classification or shared memory, "
                "which are not supported",
                tensor=name,
            )
        wanted = options.get("binary_data", default)
        if not isinstance(wanted, bool):
            raise _error(f"output '{name}': binary_data must be a boolean", tensor=name)
        names.append(name)
        if wanted:
            binary.add(name)
    return names, binary


def decode_v2(
    body: bytes, header_length: int | None, expected: Sequence[TensorSpec] | None
) -> InferRequest:
    """Decode an Open Inference Protocol (V2) inference request.

    Args:
        body: The raw request body.
        header_length: The ``Inference-Header-Content-Length`` header: the JSON part is
            the first ``header_length`` bytes and the binary tensor data follows, in the
            order of the inputs that carry ``parameters.binary_data_size``. ``None``
            means the whole body is JSON.
        expected: The model's inputs. When given (and not empty), every one must be
            present, no other may be, and datatypes and shapes must match; arrays are
            cast to the expected datatype where that is lossless.

    Returns:
        The request, with each input as a writable numpy array of its shape.

    Raises:
        ProtocolError: The body does not follow the protocol or does not fit
            ``expected``; ``details["tensor"]`` or ``details["field"]`` names the culprit.
    """
    if header_length is None:
        header_part, tail = body, memoryview(b"")
    elif 0 <= header_length <= len(body):
        header_part, tail = body[:header_length], memoryview(body)[header_length:]
    else:
        raise _error(
            f"Inference-Header-Content-Length {header_length} does not fit the "
            f"{len(body)}-byte body",
            field="Inference-Header-Content-Length",
        )
    doc = _load_json(header_part)
    if not isinstance(doc, dict):
        raise _error("the inference request must be a JSON object", field="$")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _error("id must be a string", field="id")
    parameters = _object_field(doc, "parameters", "parameters")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list):
        raise _error("inputs must be a JSON array", field="inputs")
    headers = [_input_header(item, index) for index, item in enumerate(raw_inputs)]
    names = [header.name for header in headers]
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise _error(f"input '{twice}' appears more than once", tensor=twice)
    specs = {spec.name: spec for spec in expected} if expected else None
    if specs is not None:
        _check_names(names, specs)

    inputs: dict[str, Array] = {}
    offset = 0
    for header in headers:
        if header.binary_size is None:
            array = _array_from_data(header)
        else:
            end = offset + header.binary_size
            if end > len(tail):
                hint = " (no Inference-Header-Content-Length was given)" * (header_length is None)
                raise _error(
                    f"binary_data_size of input '{header.name}' reaches beyond the request "
                    f"body{hint}",
                    tensor=header.name,
                )
            array = _array_from_binary(header, tail[offset:end])
            offset = end
        if specs is not None:
            array = _conform(header.name, array, header.datatype, specs[header.name])
        inputs[header.name] = array
    if offset != len(tail):
        raise _error(
            f"the request body has {len(tail) - offset} bytes after the binary tensor data",
            field="$",
        )
    outputs_wanted, binary_outputs = _requested_outputs(doc.get("outputs"), parameters)
    return InferRequest(request_id, inputs, outputs_wanted, binary_outputs, parameters)


def _json_data(array: Array, datatype: str) -> list[Any] | None:
    """The flat JSON data of an output, or None when JSON cannot carry it."""
    if datatype != "BYTES":
        values: list[Any] = array.ravel().tolist()
        return values
    texts: list[str] = []
    for item in array.ravel().tolist():
        if isinstance(item, bytes):
            try:
                texts.append(item.decode("utf-8"))
            except UnicodeDecodeError:
                return None
        else:
            texts.append(item if isinstance(item, str) else str(item))
    return texts


def _binary_data(array: Array, datatype: str) -> bytes:
    if datatype != "BYTES":
        wire = _DTYPES[datatype].newbyteorder("<")
        return np.ascontiguousarray(array, dtype=wire).tobytes()
    parts: list[bytes] = []
    for item in array.ravel().tolist():
        raw = item if isinstance(item, bytes) else str(item).encode("utf-8", "surrogatepass")
        parts += (_LENGTH.pack(len(raw)), raw)
    return b"".join(parts)


def encode_v2(
    model_name: str,
    model_version: str | None,
    request_id: str | None,
    outputs: Mapping[str, Array],
    binary: set[str] | bool,
) -> tuple[bytes, int | None]:
    """Encode an Open Inference Protocol (V2) inference response.

    Args:
        model_name: The model's name.
        model_version: The model's version, left out when ``None``.
        request_id: The request's ``id``, echoed when not empty.
        outputs: The output tensors, in the order to send them.
        binary: ``True`` to send every output as binary data, ``False`` for none, or the
            names of those to send as binary (``InferRequest.binary_outputs``). A
            ``BYTES`` output holding bytes that are not UTF-8 goes as binary regardless,
            since JSON cannot carry it.

    Returns:
        The body and the ``Inference-Header-Content-Length`` to send with it, ``None``
        when no output went as binary.

    Raises:
        ModelyardError: An output's dtype has no V2 datatype (``serving/unsupported_output``).
    """
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, value in outputs.items():
        array = np.asarray(value)
        datatype = _datatype_of(array.dtype)
        if datatype is None:
            raise ModelyardError(
                f"output '{name}' has numpy dtype {array.dtype}, which the Open Inference "
                "Protocol cannot carry",
                code="serving/unsupported_output",
                details={"tensor": name},
            )
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        as_binary = binary if isinstance(binary, bool) else name in binary
        data = None if as_binary else _json_data(array, datatype)
        if data is None:
            blob = _binary_data(array, datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = data
        entries.append(entry)
    response: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        response["model_version"] = model_version
    if request_id:
        response["id"] = request_id
    response["outputs"] = entries
    head = _dumps(response)
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)


# -- TF-serving style {"instances"} / {"inputs"} -----------------------------------------


def _infer_datatype(values: list[Any], name: str) -> str:
    kinds = set(map(type, values))
    for datatype, allowed in (("BOOL", {bool}), ("INT64", {int}), ("FP64", {int, float})):
        if kinds <= allowed:
            return datatype
    if kinds == {str}:
        return "BYTES"
    found = ", ".join(sorted(_JSON_NAMES.get(k, k.__name__) for k in kinds))
    raise _error(
        f"input '{name}' mixes JSON values of type {found}; a tensor needs one type",
        "request/datatype",
        tensor=name,
    )


def _tensor_from_json(value: Any, name: str, spec: TensorSpec | None) -> Array:
    shape, values = _rectangular(value, name) if isinstance(value, list) else ([], [value])
    datatype = spec.datatype if spec else _infer_datatype(values, name)
    if spec is None and datatype == "BYTES":
        return _reshape(_object_array(values), shape, name)  # text stays text
    array = _reshape(_array_from_values(values, datatype, name), shape, name)
    return _conform(name, array, datatype, spec) if spec else array


def decode_instances(
    body: bytes, expected: Sequence[TensorSpec] | None
) -> dict[str, Array] | Array:
    """Decode a TF-serving style body: ``{"instances": [...]}`` or ``{"inputs": ...}``.

    ``instances`` holds rows: objects (named inputs, stacked per name) or values (one
    unnamed tensor). ``inputs`` holds columns: an object of named tensors, or one
    unnamed tensor. JSON types decide the datatype (``BOOL``, ``INT64``, ``FP64``, text)
    unless ``expected`` gives it; an unnamed tensor is checked against the single
    expected spec.

    Raises:
        ProtocolError: Malformed body, ragged or mixed-type arrays, or data that does not
            fit ``expected``.
    """
    doc = _load_json(body)
    keys = [key for key in ("instances", "inputs") if isinstance(doc, dict) and key in doc]
    if len(keys) != 1:
        raise _error(
            'the request must be a JSON object with exactly one of "instances" (rows) '
            'and "inputs" (columns)',
            field="$",
        )
    key = keys[0]
    payload = doc[key]
    specs = {spec.name: spec for spec in expected} if expected else None
    columns: dict[str, Any]
    if key == "instances" and not isinstance(payload, list):
        raise _error('"instances" must be a JSON array of rows', field="instances")
    if key == "instances" and payload and isinstance(payload[0], dict):
        columns = {name: [] for name in payload[0]}
        for index, row in enumerate(payload):
            if not isinstance(row, dict) or row.keys() != columns.keys():
                raise _error(
                    f"instances[{index}] must be an object with the keys of instances[0]",
                    field=f"instances[{index}]",
                )
            for name, value in row.items():
                columns[name].append(value)
    elif key == "inputs" and isinstance(payload, dict):
        columns = payload
    else:
        if specs is None:
            return _tensor_from_json(payload, key, None)
        if len(specs) != 1:
            raise _error(
                f"the model takes named inputs ({', '.join(specs)}); send objects as "
                '"instances" or an object as "inputs"',
                "request/missing_input",
                tensor=next(iter(specs)),
            )
        (spec,) = specs.values()
        return _tensor_from_json(payload, spec.name, spec)
    if specs is not None:
        _check_names(list(columns), specs)
    return {
        name: _tensor_from_json(value, name, specs[name] if specs else None)
        for name, value in columns.items()
    }


# -- MLflow /invocations -----------------------------------------------------------------

_CONTENT_TYPES: Final = ("text/csv", "application/json", "application/vnd.apache.parquet")
_FORMATS: Final = ("dataframe_split", "dataframe_records", "instances", "inputs")
_LLM_KEYS: Final = ("messages", "prompt", "input")  # MLflow's unified LLM payloads
_REQUIRED_INPUT_FORMAT: Final = (
    "The input must be a JSON dictionary with exactly one of the input fields "
    "{'dataframe_split', 'dataframe_records', 'instances', 'inputs'}"
)


@dataclass(frozen=True)
class InvocationsInput:
    """A decoded ``/invocations`` body.

    ``data`` is what MLflow would hand to ``predict``: a DataFrame, an array, a dict of
    arrays, a list of dicts of arrays, or, for a unified LLM payload (``messages``,
    ``prompt``, ``input``), the JSON object itself. ``params`` go to
    ``predict(..., params=)``. ``unwrapped`` answers must skip the ``predictions`` key.
    """

    data: pd.DataFrame | Array | dict[str, Any] | list[dict[str, Array]]
    params: dict[str, Any] | None
    unwrapped: bool = False


def _mlflow_array(value: Any, key: str) -> Array:
    # mlflow.utils.proto_json_utils.convert_data_type without a spec: numpy's own words.
    try:
        return np.array(value)
    except Exception as exc:
        raise _error(str(exc), field=key) from exc


def _tf_serving_input(key: str, value: Any) -> Any:
    # mlflow.utils.proto_json_utils.parse_tf_serving_input without a schema.
    if isinstance(value, dict):
        return {name: _mlflow_array(item, key) for name, item in value.items()}
    if not isinstance(value, list):
        return _mlflow_array(value, key)
    if key == "inputs" or not (value and isinstance(value[0], dict)):
        if all(isinstance(item, dict) for item in value):
            return [{n: _mlflow_array(v, key) for n, v in item.items()} for item in value]
        return _mlflow_array(value, key)
    stacked: dict[str, list[Array]] = {}
    try:
        for row in value:
            for name, item in row.items():
                stacked.setdefault(name, []).append(_mlflow_array(item, key))
        columns = {name: np.array(items) for name, items in stacked.items()}
    except ProtocolError:
        raise
    except Exception as exc:  # a row that is not an object, rows numpy cannot stack
        raise _error(
            f"Ensure that the input is a valid JSON-formatted string.\nError: {exc!r}", field=key
        ) from exc
    if len({len(column) for column in columns.values()}) > 1:
        raise _error("The length of values for each input/column name are not the same", field=key)
    return columns


def _dataframe(value: Any, orient: str) -> pd.DataFrame:
    # mlflow.utils.proto_json_utils.dataframe_from_parsed_json without a schema.
    import pandas as pd

    field = f"dataframe_{orient}"
    if orient == "records" and not isinstance(value, list):
        got = "dictionary" if isinstance(value, dict) else f"type {type(value)}"
        raise _error(f"Dataframe records format must be a list of records. Got {got}.", field=field)
    if orient == "split":
        if not isinstance(value, dict):
            got = "list" if isinstance(value, list) else f"type {type(value)}"
            raise _error(f"Dataframe split format must be a dictionary. Got {got}.", field=field)
        if "data" not in value or set(value) - {"columns", "data", "index"}:
            raise _error(
                "Dataframe split format must have 'data' field and optionally 'columns' "
                f"and 'index' fields. Got {set(value)}.",
                field=field,
            )
    try:
        if orient == "records":
            return pd.DataFrame(data=value)
        return pd.DataFrame(
            index=value.get("index"), columns=value.get("columns"), data=value["data"]
        )
    except Exception as exc:
        raise _error(
            f"Provided {field} field is not a valid dataframe representation in '{orient}' "
            f"format. Error: '{exc}'",
            field=field,
        ) from exc


def _invocations_json(body: bytes) -> InvocationsInput:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise _error(
            "request body is not JSON. Ensure that input is a valid JSON formatted string. "
            f"Error: '{exc!r}'",
            field="$",
        ) from exc
    if not isinstance(doc, dict):
        got = "a list" if isinstance(doc, list) else f"unexpected input type '{type(doc)}'"
        raise _error(f"{_REQUIRED_INPUT_FORMAT}. Received {got}.", field="$")
    if any(key in doc for key in _LLM_KEYS):
        return InvocationsInput(doc, {}, unwrapped=True)
    params = doc.get("params")
    if params is not None and not isinstance(params, dict):
        raise _error('"params" must be a JSON object', field="params")
    keys = [key for key in _FORMATS if key in doc]
    if len(keys) != 1:
        raise _error(
            f"{_REQUIRED_INPUT_FORMAT}. Received dictionary with input fields: {list(doc)}.",
            field="$",
        )
    key = keys[0]
    if key in ("instances", "inputs"):
        return InvocationsInput(_tf_serving_input(key, doc[key]), params)
    return InvocationsInput(_dataframe(doc[key], key.removeprefix("dataframe_")), params)


def _tabular(body: bytes, mime: str) -> pd.DataFrame:
    import pandas as pd

    csv = mime == "text/csv"
    try:
        source = StringIO(body.decode("utf-8")) if csv else BytesIO(body)
    except UnicodeDecodeError as exc:
        raise _error(
            f"Ensure that input is a valid UTF-8 encoded string. Error: '{exc!r}'", field="$"
        ) from exc
    try:
        return pd.read_csv(source) if csv else pd.read_parquet(source)
    except Exception as exc:
        raise _error(
            "Failed to parse input as a Pandas DataFrame. Ensure that the input is a valid "
            f"{'CSV' if csv else 'Parquet'}-formatted Pandas DataFrame produced using the "
            f"`pandas.DataFrame.{'to_csv' if csv else 'to_parquet'}()` method. Error: '{exc}'",
            field="$",
        ) from exc


def decode_invocations(body: bytes, content_type: str) -> InvocationsInput:
    """Decode an MLflow ``/invocations`` body as ``mlflow.pyfunc.scoring_server`` does.

    JSON bodies carry exactly one of ``dataframe_split``, ``dataframe_records``,
    ``instances`` and ``inputs`` (plus optional ``params``), or are a unified LLM payload;
    ``text/csv`` and ``application/vnd.apache.parquet`` bodies are one DataFrame. No
    schema is applied: the server enforces the model's signature.

    Raises:
        UnsupportedMediaError: Another content type, a charset other than UTF-8, or
            unknown content type parameters.
        ProtocolError: A body that does not parse, with MLflow's messages.
    """
    mime, *options = (part.strip() for part in content_type.split(";"))
    mime = mime.lower()
    parameters = {
        key.strip().lower(): value.strip().strip('"')
        for key, _, value in (option.partition("=") for option in options if option)
    }
    if parameters.get("charset", "utf-8").lower() != "utf-8":
        raise UnsupportedMediaError(
            "The scoring server only supports UTF-8", details={"content_type": content_type}
        )
    if unknown := sorted(set(parameters) - {"charset"}):
        raise UnsupportedMediaError(
            f"Unrecognized content type parameters: {', '.join(unknown)}.",
            details={"content_type": content_type},
        )
    if mime == "application/json":
        return _invocations_json(body)
    if mime in _CONTENT_TYPES:
        return InvocationsInput(_tabular(body, mime), None)
    raise UnsupportedMediaError(
        "This predictor only supports the following content types: "
        f"Types: {list(_CONTENT_TYPES)}. Got '{content_type}'.",
        details={"content_type": content_type},
    )


class _PredictionsEncoder(json.JSONEncoder):
    """What ``mlflow.utils.proto_json_utils.NumpyEncoder`` does, without importing MLflow."""

    def default(self, o: Any) -> Any:
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, bytes | bytearray):
            return base64.encodebytes(o).decode("ascii")
        if isinstance(o, datetime.date | datetime.time):  # pandas.Timestamp included
            return o.isoformat()
        if isinstance(o, pydantic.BaseModel):
            return o.model_dump()
        return super().default(o)


def encode_predictions(predictions: Any, *, unwrapped: bool = False) -> bytes:
    """Encode a model's output as MLflow's scoring server does: ``{"predictions": ...}``.

    DataFrames go as records, Series as records of one column, arrays as nested lists,
    bytes as base64, dates in ISO format. ``unwrapped`` (unified LLM payloads) drops the
    ``predictions`` key.

    Raises:
        ModelyardError: The predictions cannot be written as JSON
            (``serving/unsupported_output``).
    """
    payload: Any = predictions
    if isinstance(predictions, np.ndarray):
        payload = predictions.tolist()
    elif (pd := sys.modules.get("pandas")) is not None:  # a DataFrame implies pandas is loaded
        if isinstance(predictions, pd.DataFrame):
            payload = predictions.to_dict(orient="records")
        elif isinstance(predictions, pd.Series):
            payload = pd.DataFrame(predictions).to_dict(orient="records")
    try:
        text = json.dumps(
            payload if unwrapped else {"predictions": payload}, cls=_PredictionsEncoder
        )
    except (TypeError, ValueError) as exc:
        raise ModelyardError(
            f"the model's predictions cannot be written as JSON: {exc}",
            code="serving/unsupported_output",
        ) from exc
    return text.encode("utf-8")


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
