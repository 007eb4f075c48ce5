"""The model server's wire formats, checked against the real clients and MLflow's parser."""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import struct
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, Schema
from mlflow.types.schema import TensorSpec as MlflowTensorSpec

from modelyard.errors import ModelyardError
from modelyard.serving.invocations import (
    InvocationsInput,
    decode_invocations,
    encode_predictions,
    numeric_rows,
)
from modelyard.serving.protocol import decode_instances, decode_v2, encode_v2
from modelyard.serving.tensors import (
    ProtocolError,
    TensorSpec,
    UnsupportedMediaError,
    model_metadata,
    server_metadata,
    tensor_specs_from_signature,
)

with warnings.catch_warnings():
    # MLflow warns about its own type hints while importing pyfunc.
    warnings.filterwarnings("ignore", message=".*Any type hint", category=UserWarning)
    from mlflow.pyfunc import scoring_server

SAMPLES: dict[str, np.ndarray] = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "UINT8": np.array([[0, 7, 255], [1, 2, 3]], dtype=np.uint8),
    "UINT16": np.array([[0, 7, 65535], [1, 2, 3]], dtype=np.uint16),
    "UINT32": np.array([[0, 7, 2**32 - 1], [1, 2, 3]], dtype=np.uint32),
    "UINT64": np.array([[0, 2**63, 2**64 - 1], [1, 2, 3]], dtype=np.uint64),
    "INT8": np.array([[-128, 0, 127], [1, -2, 3]], dtype=np.int8),
    "INT16": np.array([[-(2**15), 0, 2**15 - 1], [1, -2, 3]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 0, 2**31 - 1], [1, -2, 3]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1], [1, -2, 3]], dtype=np.int64),
    "FP16": np.array([[0.5, -1.25, 65504.0], [np.inf, np.nan, 1e-4]], dtype=np.float16),
    "FP32": np.array([[0.1, -3.4e38, 1e-30], [np.inf, -np.inf, np.nan]], dtype=np.float32),
    "FP64": np.array([[0.1, -1.7e308, 5e-324], [np.inf, -np.inf, np.nan]], dtype=np.float64),
    "BYTES": np.array(
        [[b"", b"plain", "h\u00e9\u20ac".encode()], [b"a b", b"\x00z", b"7"]], dtype=object
    ),
}


def triton_request(
    inputs: dict[str, tuple[np.ndarray, str, bool]],
    outputs: list[triton.InferRequestedOutput] | None = None,
    **kwargs: Any,
) -> tuple[bytes, int | None]:
    """The body ``tritonclient.http`` sends, from name -> (array, datatype, binary)."""
    infer_inputs = []
    for name, (array, datatype, binary) in inputs.items():
        infer_input = triton.InferInput(name, list(array.shape), datatype)
        infer_input.set_data_from_numpy(array, binary_data=binary)
        infer_inputs.append(infer_input)
    body, header_length = triton.InferenceServerClient.generate_request_body(
        infer_inputs, outputs=outputs, **kwargs
    )
    return bytes(body), header_length


def v2_body(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def expect_error(
    call: Callable[[], object], code: str, *, tensor: str | None = None, field: str | None = None
) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        call()
    error = caught.value
    assert error.code == code, error.message
    assert error.http_status == 400
    if tensor is not None:
        assert error.details["tensor"] == tensor
        assert f"'{tensor}'" in error.message
    if field is not None:
        assert error.details["field"] == field
    return error


# -- V2 with the real tritonclient -------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_every_datatype_round_trips_through_tritonclient(datatype: str, binary: bool) -> None:
    original = SAMPLES[datatype]
    if datatype == "BYTES" and not binary:  # JSON strings must be UTF-8
        original = np.array([[b"", b"plain", "h\u00e9".encode()], [b"a", b"b", b"c"]], dtype=object)
    body, header_length = triton_request(
        {"x": (original, datatype, binary)},
        outputs=[triton.InferRequestedOutput("y", binary_data=binary)],
        request_id="req-7",
    )
    assert (header_length is not None) == binary

    request = decode_v2(body, header_length, None)

    decoded = request.inputs["x"]
    assert request.id == "req-7"
    assert decoded.dtype == original.dtype
    assert decoded.shape == original.shape
    np.testing.assert_array_equal(decoded, original)
    if datatype == "BYTES":
        assert all(type(item) is bytes for item in decoded.ravel())
    assert request.outputs_wanted == ["y"]
    assert request.binary_outputs == ({"y"} if binary else set())

    response, response_length = encode_v2(
        "m", "3", request.id, {"y": decoded}, request.binary_outputs
    )
    assert (response_length is not None) == binary
    result = triton.InferResult.from_response_body(response, header_length=response_length)
    assert result.get_response()["model_name"] == "m"
    assert result.get_response()["model_version"] == "3"
    assert result.get_response()["id"] == "req-7"
    returned = result.as_numpy("y")
    assert returned.shape == original.shape
    if datatype == "BYTES" and not binary:  # tritonclient reads JSON strings as str
        np.testing.assert_array_equal(returned, np.vectorize(bytes.decode)(original))
    else:
        assert returned.dtype == original.dtype
        np.testing.assert_array_equal(returned, original)


def test_mixed_binary_and_json_inputs_keep_their_own_blobs() -> None:
    first = np.arange(6, dtype=np.float32).reshape(2, 3)
    words = np.array([b"one", b"two", b"three"], dtype=object)
    flags = np.array([True, False])
    body, header_length = triton_request(
        {
            "first": (first, "FP32", True),
            "count": (np.array([4, 5], dtype=np.int64), "INT64", False),
            "words": (words, "BYTES", True),
            "flags": (flags, "BOOL", True),
        }
    )

    request = decode_v2(body, header_length, None)

    assert list(request.inputs) == ["first", "count", "words", "flags"]
    np.testing.assert_array_equal(request.inputs["first"], first)
    np.testing.assert_array_equal(request.inputs["count"], [4, 5])
    np.testing.assert_array_equal(request.inputs["words"], words)
    np.testing.assert_array_equal(request.inputs["flags"], flags)
    assert request.inputs["first"].flags.writeable


def test_no_requested_outputs_means_all_binary_as_tritonclient_asks() -> None:
    body, header_length = triton_request({"x": (np.ones(3, dtype=np.float64), "FP64", False)})

    request = decode_v2(body, header_length, None)

    assert request.outputs_wanted is None
    assert request.binary_outputs is True
    assert request.parameters == {"binary_data_output": True}
    outputs = {"a": np.arange(4, dtype=np.int32), "b": np.array(["x", "y"])}
    response, response_length = encode_v2("m", None, None, outputs, request.binary_outputs)
    assert response_length is not None
    header = json.loads(response[:response_length])
    assert "model_version" not in header
    assert "id" not in header
    assert all("binary_data_size" in out["parameters"] for out in header["outputs"])
    result = triton.InferResult.from_response_body(response, header_length=response_length)
    np.testing.assert_array_equal(result.as_numpy("a"), outputs["a"])
    np.testing.assert_array_equal(result.as_numpy("b"), [b"x", b"y"])


def test_per_output_binary_flag_overrides_binary_data_output() -> None:
    body = v2_body(
        {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},
        outputs=[{"name": "a", "parameters": {"binary_data": False}}, {"name": "b"}],
        parameters={"binary_data_output": True},
    )

    request = decode_v2(body, None, None)

    assert request.outputs_wanted == ["a", "b"]
    assert request.binary_outputs == {"b"}


def test_json_only_response_has_no_header_length_and_flat_data() -> None:
    response, header_length = encode_v2(
        "m", None, "", {"y": np.array([[1.5, 2.0], [3.0, 4.0]])}, binary=False
    )

    assert header_length is None
    assert json.loads(response) == {
        "model_name": "m",
        "outputs": [
            {"name": "y", "datatype": "FP64", "shape": [2, 2], "data": [1.5, 2.0, 3.0, 4.0]}
        ],
    }


def test_bytes_that_are_not_utf8_go_binary_even_when_json_was_asked() -> None:
    values = np.array([b"\xff\xfe", b"ok"], dtype=object)

    response, header_length = encode_v2("m", None, None, {"y": values, "z": np.array([1])}, False)

    assert header_length is not None
    result = triton.InferResult.from_response_body(response, header_length=header_length)
    np.testing.assert_array_equal(result.as_numpy("y"), values)
    assert result.get_output("z")["data"] == [1]


def test_output_dtype_without_v2_datatype_is_a_server_error() -> None:
    with pytest.raises(ModelyardError) as caught:
        encode_v2("m", None, None, {"y": np.array([1 + 2j])}, False)

    assert caught.value.code == "serving/unsupported_output"
    assert caught.value.http_status == 500
    assert caught.value.details == {"tensor": "y"}


# -- V2 JSON details ----------------------------------------------------------------------


def test_nested_and_flat_data_decode_alike() -> None:
    flat = v2_body({"name": "x", "shape": [2, 2, 2], "datatype": "INT32", "data": list(range(8))})
    nested = v2_body(
        {
            "name": "x",
            "shape": [2, 2, 2],
            "datatype": "INT32",
            "data": [[[0, 1], [2, 3]], [[4, 5], [6, 7]]],
        }
    )
    # Nesting need not follow the shape: only the row-major order of the leaves counts.
    regrouped = v2_body(
        {"name": "x", "shape": [2, 2, 2], "datatype": "INT32", "data": [[0, 1, 2, 3], [4, 5, 6, 7]]}
    )

    arrays = [decode_v2(body, None, None).inputs["x"] for body in (flat, nested, regrouped)]

    for array in arrays:
        assert array.dtype == np.int32
        np.testing.assert_array_equal(array, np.arange(8).reshape(2, 2, 2))


def test_json_strings_decode_to_the_same_bytes_as_binary_elements() -> None:
    texts = ["", "caf\u00e9", "\U0001f600"]
    as_json = v2_body({"name": "s", "shape": [3], "datatype": "BYTES", "data": texts})
    encoded = [text.encode() for text in texts]
    blob = b"".join(struct.pack("<I", len(item)) + item for item in encoded)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "s",
                    "shape": [3],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        }
    ).encode()

    from_json = decode_v2(as_json, None, None).inputs["s"]
    from_binary = decode_v2(header + blob, len(header), None).inputs["s"]

    assert from_json.tolist() == encoded
    assert from_binary.tolist() == encoded


def test_scalar_and_empty_tensors() -> None:
    body = v2_body(
        {"name": "scalar", "shape": [], "datatype": "FP64", "data": [2.5]},
        {"name": "empty", "shape": [0, 3], "datatype": "INT8", "data": []},
    )

    request = decode_v2(body, None, None)

    assert request.inputs["scalar"].shape == ()
    assert request.inputs["scalar"] == 2.5
    assert request.inputs["empty"].shape == (0, 3)


SPECS = [TensorSpec("x", "FP32", (-1, 3)), TensorSpec("ids", "INT64", (-1,))]


def _with(x: dict[str, Any] | None = None, ids: dict[str, Any] | None = None) -> bytes:
    x_input = {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3], **(x or {})}
    ids_input = {"name": "ids", "shape": [2], "datatype": "INT64", "data": [7, 8], **(ids or {})}
    return v2_body(x_input, ids_input)


def test_expected_specs_accept_any_size_for_minus_one() -> None:
    body = _with(
        x={"shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}, ids={"shape": [5], "data": [1] * 5}
    )

    request = decode_v2(body, None, SPECS)

    assert request.inputs["x"].shape == (2, 3)
    assert request.inputs["ids"].shape == (5,)


@pytest.mark.parametrize(
    ("sent", "expected", "ok"),
    [
        ("INT32", "FP64", True),
        ("INT16", "FP32", True),
        ("UINT8", "FP16", True),
        ("INT8", "INT64", True),
        ("FP32", "FP64", True),
        ("INT64", "FP64", False),
        ("INT32", "FP32", False),
        ("FP64", "FP32", False),
        ("UINT64", "INT64", False),
        ("BOOL", "INT8", False),
        ("INT64", "BYTES", False),
    ],
)
def test_datatype_may_differ_only_where_the_cast_is_lossless(
    sent: str, expected: str, ok: bool
) -> None:
    data = [True, False] if sent == "BOOL" else [1, 2]
    body = v2_body({"name": "v", "shape": [2], "datatype": sent, "data": data})
    spec = [TensorSpec("v", expected, (2,))]

    if ok:
        array = decode_v2(body, None, spec).inputs["v"]
        assert array.dtype == np.dtype(SAMPLES[expected].dtype)
        np.testing.assert_array_equal(array, [1, 2])
    else:
        error = expect_error(lambda: decode_v2(body, None, spec), "request/datatype", tensor="v")
        assert expected in error.message


def test_column_spec_takes_a_vector_or_a_column() -> None:
    spec = [TensorSpec("age", "INT64", (-1, 1))]
    vector = v2_body({"name": "age", "shape": [3], "datatype": "INT64", "data": [1, 2, 3]})
    column = v2_body({"name": "age", "shape": [3, 1], "datatype": "INT64", "data": [1, 2, 3]})

    for body in (vector, column):
        assert decode_v2(body, None, spec).inputs["age"].shape == (3, 1)


# -- V2 errors ---------------------------------------------------------------------------

ERROR_CASES: list[tuple[str, Callable[[], object], str, dict[str, str]]] = [
    ("not JSON", lambda: decode_v2(b"{inputs:", None, None), "request/invalid", {"field": "$"}),
    (
        "not UTF-8",
        lambda: decode_v2(b'{"a": "\xff"}', None, None),
        "request/invalid",
        {"field": "$"},
    ),
    ("top-level array", lambda: decode_v2(b"[]", None, None), "request/invalid", {"field": "$"}),
    ("no inputs", lambda: decode_v2(b"{}", None, None), "request/invalid", {"field": "inputs"}),
    (
        "input not an object",
        lambda: decode_v2(b'{"inputs": [3]}', None, None),
        "request/invalid",
        {"field": "inputs[0]"},
    ),
    (
        "element count",
        lambda: decode_v2(_with(x={"data": [1, 2]}), None, None),
        "request/shape",
        {"tensor": "x"},
    ),
    (
        "ragged nesting",
        lambda: decode_v2(_with(x={"data": [[1, 2], [3]]}), None, None),
        "request/shape",
        {"tensor": "x"},
    ),
    (
        "unknown datatype",
        lambda: decode_v2(_with(ids={"datatype": "INT128"}), None, None),
        "request/datatype",
        {"tensor": "ids"},
    ),
    (
        "string in a number tensor",
        lambda: decode_v2(_with(x={"data": [1, "2", 3]}), None, None),
        "request/datatype",
        {"tensor": "x"},
    ),
    (
        "boolean in an integer tensor",
        lambda: decode_v2(_with(ids={"data": [True, 1]}), None, None),
        "request/datatype",
        {"tensor": "ids"},
    ),
    (
        "float in an integer tensor",
        lambda: decode_v2(_with(ids={"data": [1.5, 1]}), None, None),
        "request/datatype",
        {"tensor": "ids"},
    ),
    (
        "out of range",
        lambda: decode_v2(_with(ids={"datatype": "INT8", "data": [300, 1]}), None, None),
        "request/datatype",
        {"tensor": "ids"},
    ),
    (
        "FP32 overflow",
        lambda: decode_v2(_with(x={"data": [1e39, 1, 2]}), None, None),
        "request/datatype",
        {"tensor": "x"},
    ),
    (
        "negative dimension",
        lambda: decode_v2(_with(ids={"shape": [-2]}), None, None),
        "request/shape",
        {"tensor": "ids"},
    ),
    (
        "data not an array",
        lambda: decode_v2(_with(ids={"data": 7}), None, None),
        "request/invalid",
        {"tensor": "ids"},
    ),
    (
        "duplicate input",
        lambda: decode_v2(
            v2_body(*[{"name": "d", "shape": [1], "datatype": "FP32", "data": [1]}] * 2), None, None
        ),
        "request/invalid",
        {"tensor": "d"},
    ),
    (
        "missing input",
        lambda: decode_v2(
            v2_body({"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}),
            None,
            SPECS,
        ),
        "request/missing_input",
        {"tensor": "ids"},
    ),
    (
        "unknown input",
        lambda: decode_v2(
            v2_body(
                {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]},
                {"name": "ids", "shape": [1], "datatype": "INT64", "data": [1]},
                {"name": "extra", "shape": [1], "datatype": "INT64", "data": [1]},
            ),
            None,
            SPECS,
        ),
        "request/unknown_input",
        {"tensor": "extra"},
    ),
    (
        "wrong rank",
        lambda: decode_v2(_with(x={"shape": [3]}), None, SPECS),
        "request/shape",
        {"tensor": "x"},
    ),
    (
        "wrong fixed dimension",
        lambda: decode_v2(_with(x={"shape": [3, 1]}), None, SPECS),
        "request/shape",
        {"tensor": "x"},
    ),
    (
        "data and binary_data_size",
        lambda: decode_v2(_with(ids={"parameters": {"binary_data_size": 16}}), None, None),
        "request/invalid",
        {"tensor": "ids"},
    ),
    (
        "neither data nor binary_data_size",
        lambda: decode_v2(v2_body({"name": "n", "shape": [1], "datatype": "FP32"}), None, None),
        "request/invalid",
        {"tensor": "n"},
    ),
    (
        "classification output",
        lambda: decode_v2(
            _with()[:-1] + b', "outputs": [{"name": "y", "parameters": {"classification": 3}}]}',
            None,
            None,
        ),
        "request/invalid",
        {"tensor": "y"},
    ),
]


@pytest.mark.parametrize(
    ("case", "call", "code", "names"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES]
)
def test_v2_errors_carry_a_code_and_name_the_culprit(
    case: str, call: Callable[[], object], code: str, names: dict[str, str]
) -> None:
    expect_error(call, code, **names)


def test_element_count_error_says_what_the_shape_needs() -> None:
    error = expect_error(
        lambda: decode_v2(_with(x={"data": [1, 2]}), None, None), "request/shape", tensor="x"
    )

    assert "has 2 elements but shape [1, 3] needs 3" in error.message


def _binary_request(datatype: str, shape: list[int], blob: bytes, size: int | None = None) -> bytes:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "b",
                    "shape": shape,
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(blob) if size is None else size},
                }
            ]
        }
    ).encode()
    return header + blob


def _header_length(body: bytes) -> int:
    return body.index(b"}]}") + 3


BINARY_CASES = [
    (
        "BYTES truncated length",
        _binary_request("BYTES", [2], struct.pack("<I", 1) + b"a" + b"\x02\x00"),
        "request/invalid",
    ),
    (
        "BYTES length beyond blob",
        _binary_request("BYTES", [1], struct.pack("<I", 9) + b"abc"),
        "request/invalid",
    ),
    (
        "BYTES element count",
        _binary_request("BYTES", [3], struct.pack("<I", 1) + b"a"),
        "request/shape",
    ),
    ("FP32 byte count", _binary_request("FP32", [2], b"\x00" * 7), "request/shape"),
    ("BOOL not 0 or 1", _binary_request("BOOL", [2], b"\x01\x02"), "request/invalid"),
    ("size beyond body", _binary_request("INT32", [4], b"\x00" * 8, size=16), "request/invalid"),
    ("bytes after the data", _binary_request("INT32", [1], b"\x00" * 8, size=4), "request/invalid"),
]


@pytest.mark.parametrize(("case", "body", "code"), BINARY_CASES, ids=[c[0] for c in BINARY_CASES])
def test_binary_data_errors(case: str, body: bytes, code: str) -> None:
    error = expect_error(lambda: decode_v2(body, _header_length(body), None), code)
    assert error.details.get("tensor", "b") == "b"


def test_binary_input_without_header_length_is_refused() -> None:
    body, header_length = triton_request({"x": (np.ones(2, dtype=np.float32), "FP32", True)})
    assert header_length is not None

    error = expect_error(lambda: decode_v2(body, None, None), "request/invalid")
    # Without the header the whole body is parsed as JSON, which the binary tail breaks.
    assert error.details["field"] == "$"
    header_only = body[:header_length]
    error = expect_error(lambda: decode_v2(header_only, None, None), "request/invalid", tensor="x")
    assert "Inference-Header-Content-Length" in error.message


@pytest.mark.parametrize("header_length", [-1, 10_000])
def test_header_length_outside_the_body(header_length: int) -> None:
    expect_error(
        lambda: decode_v2(b"{}", header_length, None),
        "request/invalid",
        field="Inference-Header-Content-Length",
    )


# -- {"instances"} / {"inputs"} -----------------------------------------------------------


def test_instances_rows_become_named_columns() -> None:
    body = json.dumps({"instances": [{"a": 1, "b": [0.5, 1]}, {"a": 2, "b": [1.5, 2]}]}).encode()

    columns = decode_instances(body, None)

    assert isinstance(columns, dict)
    assert columns["a"].dtype == np.int64
    np.testing.assert_array_equal(columns["a"], [1, 2])
    assert columns["b"].dtype == np.float64
    np.testing.assert_array_equal(columns["b"], [[0.5, 1], [1.5, 2]])


def test_unnamed_instances_and_inputs_are_one_tensor() -> None:
    rows = decode_instances(b'{"instances": [[1, 2], [3, 4]]}', None)
    columns = decode_instances(b'{"inputs": [[true], [false]]}', None)

    assert isinstance(rows, np.ndarray)
    np.testing.assert_array_equal(rows, [[1, 2], [3, 4]])
    assert isinstance(columns, np.ndarray)
    assert columns.dtype == np.bool_


def test_instances_text_stays_text_unless_the_spec_says_bytes() -> None:
    body = b'{"inputs": {"word": ["a", "b\\u00e9"]}}'

    plain = decode_instances(body, None)
    typed = decode_instances(body, [TensorSpec("word", "BYTES", (-1, 1))])

    assert isinstance(plain, dict)
    assert plain["word"].tolist() == ["a", "b\u00e9"]
    assert isinstance(typed, dict)
    assert typed["word"].tolist() == [[b"a"], ["b\u00e9".encode()]]


def test_instances_follow_the_expected_spec() -> None:
    specs = [TensorSpec("x", "FP32", (-1, 2))]

    array = decode_instances(b'{"instances": [[1, 2], [3, 4.5]]}', specs)

    assert isinstance(array, np.ndarray)
    assert array.dtype == np.float32
    expect_error(
        lambda: decode_instances(b'{"instances": [[1, 2, 3]]}', specs), "request/shape", tensor="x"
    )
    expect_error(
        lambda: decode_instances(b'{"inputs": {"y": [1]}}', specs),
        "request/unknown_input",
        tensor="y",
    )
    two = [*specs, TensorSpec("z", "INT64", (-1,))]
    expect_error(
        lambda: decode_instances(b'{"inputs": {"x": [[1, 2]]}}', two),
        "request/missing_input",
        tensor="z",
    )
    expect_error(lambda: decode_instances(b'{"instances": [[1, 2]]}', two), "request/missing_input")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"nope", "request/invalid"),
        (b'{"instances": [1], "inputs": [1]}', "request/invalid"),
        (b'{"instances": {"a": 1}}', "request/invalid"),
        (b'{"instances": [{"a": 1}, {"b": 1}]}', "request/invalid"),
        (b'{"instances": [[1, 2], [3]]}', "request/shape"),
        (b'{"instances": [1, "a"]}', "request/datatype"),
        (b'{"inputs": {"a": [null]}}', "request/datatype"),
        (b'{"inputs": {"a": [18446744073709551616]}}', "request/datatype"),
    ],
)
def test_instances_errors(body: bytes, code: str) -> None:
    expect_error(lambda: decode_instances(body, None), code)


# -- MLflow /invocations ------------------------------------------------------------------


def _mlflow_parse(body: bytes, content_type: str) -> Any:
    if content_type == "text/csv":
        return scoring_server.parse_csv_input(io.StringIO(body.decode()))
    if content_type == "application/vnd.apache.parquet":
        return scoring_server.parse_parquet_input(io.BytesIO(body))
    data, _ = scoring_server._split_data_and_params(body.decode())
    return scoring_server.infer_and_parse_data(data)


def _assert_same(ours: Any, theirs: Any) -> None:
    assert type(ours) is type(theirs)
    if isinstance(theirs, pd.DataFrame):
        pd.testing.assert_frame_equal(ours, theirs)
    elif isinstance(theirs, np.ndarray):
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)
    elif isinstance(theirs, dict):
        assert list(ours) == list(theirs)
        for key in theirs:
            _assert_same(ours[key], theirs[key])
    else:
        assert len(ours) == len(theirs)
        for mine, other in zip(ours, theirs, strict=True):
            _assert_same(mine, other)


_FRAME = pd.DataFrame({"a": [1, 2], "b": [0.5, None], "c": ["x", "y"]})
INVOCATIONS = {
    "split": {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2.5], [3, 4]]}},
    "split with index": {
        "dataframe_split": {"index": [7, 8], "columns": ["a"], "data": [[1], [2]]}
    },
    "records": {"dataframe_records": [{"a": 1, "b": "x"}, {"a": 2, "b": None}]},
    "instances of values": {"instances": [[1, 2], [3, 4]]},
    "instances of rows": {"instances": [{"a": 1, "b": [1, 2]}, {"a": 2, "b": [3, 4]}]},
    "inputs as columns": {"inputs": {"a": [1, 2], "b": ["x", "y"]}},
    "inputs as a tensor": {"inputs": [[1.5, 2], [3, 4]]},
    "inputs as records": {"inputs": [{"a": 1}, {"a": 2}]},
    "inputs as a scalar": {"inputs": 3},
    "mixed types": {"instances": [1, "a"]},
    "with params": {"inputs": [1, 2], "params": {"k": 3}},
    "extra keys ignored": {"inputs": [1], "other": True},
}


@pytest.mark.parametrize("payload", list(INVOCATIONS.values()), ids=list(INVOCATIONS))
def test_invocations_json_decodes_as_mlflow_does(payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()

    decoded = decode_invocations(body, "application/json; charset=utf-8")

    _assert_same(decoded.data, _mlflow_parse(body, "application/json"))
    assert decoded.params == payload.get("params")
    assert decoded.unwrapped is False


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/csv", _FRAME.to_csv(index=False).encode()),
        ("application/vnd.apache.parquet", _FRAME.to_parquet()),
    ],
)
def test_invocations_tables_decode_as_mlflow_does(content_type: str, body: bytes) -> None:
    decoded = decode_invocations(body, content_type)

    _assert_same(decoded.data, _mlflow_parse(body, content_type))
    pd.testing.assert_frame_equal(decoded.data, _FRAME)


BAD_INVOCATIONS = {
    "not JSON": b"{",
    "a list": b"[1]",
    "a number": b"3",
    "no format key": b'{"data": [1]}',
    "two format keys": b'{"inputs": [1], "instances": [1]}',
    "records as a dict": b'{"dataframe_records": {"a": 1}}',
    "split as a list": b'{"dataframe_split": [1]}',
    "split without data": b'{"dataframe_split": {"columns": ["a"]}}',
    "split with extra keys": b'{"dataframe_split": {"data": [[1]], "dtypes": 1}}',
    "split that pandas refuses": b'{"dataframe_split": {"columns": ["a", "b"], "data": [[1]]}}',
    "ragged instances": b'{"instances": [[1, 2], [3]]}',
    "rows of unequal lengths": b'{"instances": [{"a": 1, "b": 2}, {"a": 3}]}',
    "row that is not an object": b'{"instances": [{"a": 1}, 2]}',
}


@pytest.mark.parametrize("body", list(BAD_INVOCATIONS.values()), ids=list(BAD_INVOCATIONS))
def test_invocations_refuse_what_mlflow_refuses(body: bytes) -> None:
    with pytest.raises(Exception, match=r".") as theirs:
        _mlflow_parse(body, "application/json")
    assert type(theirs.value).__name__ in {"MlflowException", "MlflowInvalidInputException"}

    error = expect_error(lambda: decode_invocations(body, "application/json"), "request/invalid")
    # MLflow's words (less the prefix of its exception class), so users can search for either.
    assert theirs.value.message.removeprefix("Invalid input. ")[:30] in error.message


def test_unified_llm_payload_passes_through_unwrapped() -> None:
    body = b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 0.1}'

    decoded = decode_invocations(body, "application/json")

    assert decoded == InvocationsInput(json.loads(body), {}, unwrapped=True)
    assert encode_predictions({"choices": []}, unwrapped=True) == b'{"choices": []}'


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "",
        "application/json; charset=latin-1",
        "application/json; format=pandas-split",
    ],
)
def test_invocations_unsupported_media(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaError) as caught:
        decode_invocations(b'{"inputs": [1]}', content_type)

    assert caught.value.http_status == 415
    assert caught.value.code == "request/unsupported_media_type"


def test_invocations_csv_errors() -> None:
    expect_error(lambda: decode_invocations(b"\xff\xfe", "text/csv"), "request/invalid")
    expect_error(lambda: decode_invocations(b"", "text/csv"), "request/invalid")
    expect_error(
        lambda: decode_invocations(b"PAR1", "application/vnd.apache.parquet"), "request/invalid"
    )


PREDICTIONS = {
    "array": np.array([[1.5, np.nan], [3.0, 4.0]]),
    "int array": np.arange(3, dtype=np.int32),
    "frame": _FRAME,
    "series": pd.Series([1, 2], name="score"),
    "list of numpy scalars": [np.float32(0.5), np.int64(3), np.bool_(True)],
    "dict of arrays": {"a": np.array([1, 2]), "b": "text"},
    "bytes": [b"\x00\x01" * 50],
    "dates": [datetime.date(2024, 1, 2), pd.Timestamp("2024-01-02T03:04:05")],
}


@pytest.mark.parametrize("predictions", list(PREDICTIONS.values()), ids=list(PREDICTIONS))
def test_encode_predictions_writes_what_mlflow_writes(predictions: Any) -> None:
    theirs = io.StringIO()
    scoring_server.predictions_to_json(predictions, theirs)

    assert encode_predictions(predictions).decode() == theirs.getvalue()


def test_encode_predictions_of_an_unknown_object_is_a_server_error() -> None:
    with pytest.raises(ModelyardError) as caught:
        encode_predictions([object()])

    assert caught.value.code == "serving/unsupported_output"


# -- metadata ------------------------------------------------------------------------------


def test_server_and_model_metadata() -> None:
    server = json.loads(server_metadata())
    model = json.loads(
        model_metadata("iris", ["1", "2"], "mlflow_pyfunc", [TensorSpec("x", "FP32", (-1, 4))], [])
    )

    assert server["name"] == "modelyard"
    assert "binary_tensor_data" in server["extensions"]
    assert model == {
        "name": "iris",
        "versions": ["1", "2"],
        "platform": "mlflow_pyfunc",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [],
    }


def test_tensor_signature_gives_one_spec_per_tensor() -> None:
    signature = ModelSignature(
        inputs=Schema(
            [
                MlflowTensorSpec(np.dtype(np.float32), (-1, 28, 28), "image"),
                MlflowTensorSpec(np.dtype(np.object_), (-1,), "caption"),
            ]
        ),
        outputs=Schema([MlflowTensorSpec(np.dtype(np.int64), (-1,))]),
    )

    inputs, outputs = tensor_specs_from_signature(signature)

    assert inputs == [
        TensorSpec("image", "FP32", (-1, 28, 28)),
        TensorSpec("caption", "BYTES", (-1,)),
    ]
    assert outputs == [TensorSpec("output-0", "INT64", (-1,))]


def test_column_signature_gives_a_column_tensor_per_column() -> None:
    columns = [
        ColSpec("integer", "age"),
        ColSpec("double", "income"),
        ColSpec("string", "name"),
        ColSpec("boolean", "member"),
        ColSpec(Array("double"), "history"),
        ColSpec("datetime", "when"),
    ]
    signature = ModelSignature(
        inputs=Schema(columns), outputs=Schema([MlflowTensorSpec(np.dtype(np.float32), (-1,))])
    )

    inputs, outputs = tensor_specs_from_signature(signature)

    assert inputs == [
        TensorSpec("age", "INT32", (-1, 1)),
        TensorSpec("income", "FP64", (-1, 1)),
        TensorSpec("name", "BYTES", (-1, 1)),
        TensorSpec("member", "BOOL", (-1, 1)),
        TensorSpec("history", "BYTES", (-1, 1)),
        TensorSpec("when", "BYTES", (-1, 1)),
    ]
    assert outputs == [TensorSpec("output-0", "FP32", (-1,))]
    assert tensor_specs_from_signature(None) == ([], [])
    unnamed = ModelSignature(inputs=Schema([ColSpec("double")]))
    assert tensor_specs_from_signature(unnamed) == ([TensorSpec("input-0", "FP64", (-1, 1))], [])


def test_tritonclient_request_fits_the_specs_of_a_column_signature() -> None:
    signature = ModelSignature(inputs=Schema([ColSpec("long", "age"), ColSpec("string", "name")]))
    inputs, _ = tensor_specs_from_signature(signature)
    body, header_length = triton_request(
        {
            "age": (np.array([[3], [4], [5]], dtype=np.int64), "INT64", True),
            "name": (np.array([b"x", b"y", b"z"], dtype=object), "BYTES", False),
        }
    )

    request = decode_v2(body, header_length, inputs)

    np.testing.assert_array_equal(request.inputs["age"], [[3], [4], [5]])
    assert request.inputs["name"].tolist() == [[b"x"], [b"y"], [b"z"]]


# -- fuzzing --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)
v2_inputs = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["x", "ids", ""]) | json_values,
        "datatype": st.sampled_from(["FP32", "INT64", "BYTES", "BOOL", "UINT8", "FP16", "X"]),
        "shape": st.lists(st.integers(-1, 4), max_size=3) | json_values,
    },
    optional={
        "data": json_values
        | st.lists(st.integers() | st.floats() | st.booleans() | st.text(max_size=3), max_size=8),
        "parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_size": st.integers(-1, 40) | json_values}
        ),
    },
)
v2_documents = st.fixed_dictionaries(
    {"inputs": st.lists(v2_inputs, max_size=3)},
    optional={
        "id": json_values,
        "parameters": st.dictionaries(st.sampled_from(["binary_data_output", "k"]), json_values),
        "outputs": st.lists(
            st.fixed_dictionaries(
                {"name": st.text(max_size=3)},
                optional={
                    "parameters": st.dictionaries(
                        st.sampled_from(["binary_data", "x"]), json_values
                    )
                },
            ),
            max_size=2,
        ),
    },
)
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EXPECTED = [TensorSpec("x", "FP32", (-1, 2)), TensorSpec("ids", "INT64", (-1,))]


@FUZZ
@given(document=v2_documents, tail=st.binary(max_size=40), with_specs=st.booleans())
def test_fuzzed_v2_requests_raise_only_protocol_errors(
    document: dict[str, Any], tail: bytes, with_specs: bool
) -> None:
    header = json.dumps(document).encode()
    with contextlib.suppress(ProtocolError):
        decode_v2(header + tail, len(header), EXPECTED if with_specs else None)


@FUZZ
@given(
    body=st.binary(max_size=60) | json_values.map(lambda value: json.dumps(value).encode()),
    cut=st.integers(-2, 70),
)
def test_fuzzed_bodies_raise_only_protocol_errors(body: bytes, cut: int) -> None:
    for call in (
        lambda: decode_v2(body, None, None),
        lambda: decode_v2(body, cut, None),
        lambda: decode_instances(body, None),
        lambda: decode_instances(body, EXPECTED),
        lambda: decode_instances(b'{"inputs": %s}' % body, None),
    ):
        with contextlib.suppress(ProtocolError):
            call()


@FUZZ
@given(
    value=json_values,
    key=st.sampled_from(["dataframe_split", "dataframe_records", "instances", "inputs", "prompt"]),
    content_type=st.sampled_from(
        ["application/json", "text/csv", "application/xml", "text/csv; charset=ascii"]
    ),
)
def test_fuzzed_invocations_raise_only_protocol_or_media_errors(
    value: Any, key: str, content_type: str
) -> None:
    for body in (json.dumps({key: value}).encode(), json.dumps(value).encode()):
        with contextlib.suppress(ProtocolError, UnsupportedMediaError):
            decode_invocations(body, content_type)


def test_numeric_invocations_bodies_become_rows_in_the_signature_order() -> None:
    columns = ["a", "b"]
    split = {"dataframe_split": {"columns": ["b", "a"], "data": [[2, 1], [4, 3]]}}
    rows = numeric_rows(json.dumps(split).encode(), "application/json", columns)
    assert rows is not None
    assert rows.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    records = {"dataframe_records": [{"b": 2, "a": 1, "c": 9}]}
    rows = numeric_rows(json.dumps(records).encode(), "application/json; charset=utf-8", columns)
    assert rows is not None
    assert rows.tolist() == [[1.0, 2.0]]
    # Anything else takes the general path (and its messages): None.
    for body in (
        {"dataframe_split": {"columns": ["a"], "data": [[1]]}},  # a column missing
        {"dataframe_split": {"columns": ["a", "b"], "data": [["x", 1]]}},  # text
        {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}, "params": {}},
        {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2, 3]]}},  # ragged
        {"instances": [[1, 2]]},
        [1, 2],
    ):
        assert numeric_rows(json.dumps(body).encode(), "application/json", columns) is None
    assert numeric_rows(b"{not json", "application/json", columns) is None
    assert numeric_rows(b"a,b\n1,2", "text/csv", columns) is None
