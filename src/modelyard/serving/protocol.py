"""The Open Inference Protocol (KServe V2) and the TF-serving style body, as pure
functions over bytes.

* V2, what ``tritonclient.http`` speaks, including Triton's binary tensor data
  extension (``binary_data_size`` parameters and the ``Inference-Header-Content-Length``
  header);
* the TF-serving / KServe V1 body, ``{"instances": [...]}`` (rows) or
  ``{"inputs": {...}}`` (columns).

No HTTP framework is involved: the server passes the raw body and the headers it needs,
and sends the bytes these functions return. Tensors and their checks are in
:mod:`modelyard.serving.tensors`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from modelyard.errors import ModelyardError

if TYPE_CHECKING:
    pass

from modelyard.serving.tensors import (
    _DTYPES,
    _JSON_NAMES,
    _LENGTH,
    Array,
    TensorSpec,
    _array_from_values,
    _check_names,
    _conform,
    _datatype_of,
    _dumps,
    _error,
    _load_json,
    _object_array,
    _object_field,
    _rectangular,
    _reshape,
)


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
