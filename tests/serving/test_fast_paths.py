"""XGBoost and ONNX models logged with MLflow, served on their native fast paths: the
same answers as MLflow's own predict, through V2 (the real tritonclient) and
/invocations; and the pyfunc fallback where the signature does not allow the fast path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import mlflow
import mlflow.onnx
import mlflow.xgboost
import numpy as np
import onnx
import pandas as pd
import pytest
import tritonclient.http as triton
import xgboost
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_breast_cancer

from modelyard.serving.app import ModelServer
from modelyard.serving.invocations import encode_predictions
from modelyard.serving.models import Batching, ServedModel, load_model
from tests.serving.conftest import StartServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cancer() -> tuple[pd.DataFrame, pd.Series]:
    data = load_breast_cancer(as_frame=True)
    return data.frame.drop(columns="target"), data.target


def _linear_onnx() -> onnx.ModelProto:
    """y = X @ W + b and score = sigmoid(y), X of three float columns."""
    weights = numpy_helper.from_array(np.array([[0.5], [-1.0], [2.0]], np.float32), "W")
    bias = numpy_helper.from_array(np.array([0.25], np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["y"]),
            helper.make_node("Sigmoid", ["y"], ["score"]),
        ],
        "linear",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1]),
            helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1]),
        ],
        [weights, bias],
    )
    return _model(graph)


def _two_inputs_onnx() -> onnx.ModelProto:
    """sum = a + b and prod = a * b, of two [N, 2] float tensors."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Mul", ["a", "b"], ["prod"]),
        ],
        "pair",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 2]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, [None, 2]),
            helper.make_tensor_value_info("prod", TensorProto.FLOAT, [None, 2]),
        ],
    )
    return _model(graph)


def _by_column_onnx() -> onnx.ModelProto:
    """out = a * b - c, each input one column (a rank-1 tensor)."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["a", "b"], ["ab"]),
            helper.make_node("Sub", ["ab", "c"], ["out"]),
        ],
        "by_column",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None]) for n in ("c", "a", "b")],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None])],
    )
    return _model(graph)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every onnxruntime of the last years reads
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def saved(
    tmp_path_factory: pytest.TempPathFactory, cancer: tuple[pd.DataFrame, pd.Series]
) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fast")
    frame, target = cancer
    classifier = xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(frame, target)
    mlflow.xgboost.save_model(
        classifier,
        folder / "xgb_classifier",
        signature=mlflow.models.infer_signature(frame, classifier.predict(frame)),
        input_example=frame.head(3),
    )
    booster = xgboost.train(
        {"objective": "reg:squarederror", "max_depth": 3},
        xgboost.DMatrix(frame, label=frame["mean area"]),
        num_boost_round=15,
    )
    mlflow.xgboost.save_model(
        booster,
        folder / "xgb_booster",
        signature=mlflow.models.infer_signature(frame, booster.predict(xgboost.DMatrix(frame))),
        input_example=frame.head(3),
    )
    mlflow.xgboost.save_model(  # an unnamed tensor: its columns cannot be checked by name
        classifier,
        folder / "xgb_tensor",
        signature=mlflow.models.infer_signature(frame.to_numpy(), classifier.predict(frame)),
    )
    columns = pd.DataFrame(
        np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32), columns=["a", "b", "c"]
    )
    outputs = pd.DataFrame({"y": np.zeros(2, np.float32), "score": np.zeros(2, np.float32)})
    mlflow.onnx.save_model(
        _linear_onnx(),
        folder / "onnx_linear",
        signature=mlflow.models.infer_signature(columns, outputs),
        input_example=columns.head(2),
    )
    mlflow.onnx.save_model(  # several inputs, fed a column each by name
        _by_column_onnx(),
        folder / "onnx_columns",
        signature=mlflow.models.infer_signature(columns, pd.DataFrame({"out": np.zeros(2)})),
        input_example=columns.head(2),
    )
    pair = {"a": np.ones((2, 2), np.float32), "b": np.ones((2, 2), np.float32)}
    mlflow.onnx.save_model(
        _two_inputs_onnx(),
        folder / "onnx_pair",
        signature=mlflow.models.infer_signature(pair, {"sum": pair["a"], "prod": pair["a"]}),
    )
    mlflow.onnx.save_model(_linear_onnx(), folder / "onnx_unsigned")
    (folder / "columns.parquet").write_bytes(columns.to_parquet())
    return {p.name: p for p in folder.iterdir()}


def _serve(start_server: StartServer, path: Path) -> tuple[str, ServedModel]:
    model = load_model(str(path), batching=Batching(max_batch_size=32, max_latency_ms=2))
    return start_server(ModelServer([model])), model


def _rows(name: str, saved: dict[str, Path], cancer: tuple[pd.DataFrame, pd.Series]) -> Any:
    if name.startswith("onnx"):
        return pd.read_parquet(saved["columns.parquet"]).head(25)
    return cancer[0].head(25)


def _v2(url: str, name: str, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """The model's outputs for ``rows`` through V2: one binary tensor per column."""
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    metadata = client.get_model_metadata(name)
    inputs = []
    for spec in metadata["inputs"]:
        tensor = triton.InferInput(spec["name"], [len(rows), 1], spec["datatype"])
        column = rows[[spec["name"]]].to_numpy(triton.triton_to_np_dtype(spec["datatype"]))
        tensor.set_data_from_numpy(column, binary_data=True)
        inputs.append(tensor)
    result = client.infer(name, inputs)
    outputs = {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}
    client.close()
    return outputs


@pytest.mark.parametrize(
    ("name", "flavor", "platform"),
    [
        ("xgb_classifier", "xgboost", "xgboost"),
        ("xgb_booster", "xgboost", "xgboost"),
        ("onnx_linear", "onnx", "onnxruntime_onnx"),
        ("onnx_columns", "onnx", "onnxruntime_onnx"),
    ],
)
def test_column_models_answer_as_mlflow_predicts_on_the_fast_path(
    start_server: StartServer,
    saved: dict[str, Path],
    cancer: tuple[pd.DataFrame, pd.Series],
    name: str,
    flavor: str,
    platform: str,
) -> None:
    url, model = _serve(start_server, saved[name])
    assert model.flavor == flavor  # the native model is called, not pyfunc
    rows = _rows(name, saved, cancer)
    expected = mlflow.pyfunc.load_model(str(saved[name])).predict(rows)
    metadata = httpx.get(f"{url}/v2/models/{name}").json()
    assert metadata["platform"] == platform
    outputs = _v2(url, name, rows)
    if isinstance(expected, pd.DataFrame):  # ONNX: one column per output
        assert sorted(outputs) == sorted(expected.columns)
        for column in expected.columns:
            np.testing.assert_array_equal(outputs[column], expected[column].to_numpy())
    else:
        (output,) = outputs.values()
        np.testing.assert_array_equal(output, expected)
        assert output.dtype == expected.dtype
    body = {"dataframe_split": rows.to_dict(orient="split")}
    answer = httpx.post(f"{url}/invocations", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == json.loads(encode_predictions(expected))


def test_xgboost_fast_path_equals_the_native_predict(
    saved: dict[str, Path], cancer: tuple[pd.DataFrame, pd.Series]
) -> None:
    frame = cancer[0]
    for name in ("xgb_classifier", "xgb_booster"):
        model = load_model(str(saved[name]), batching=Batching(max_batch_size=1))
        native = mlflow.xgboost.load_model(str(saved[name]))
        expected = (
            native.predict(xgboost.DMatrix(frame))
            if isinstance(native, xgboost.Booster)
            else native.predict(frame)
        )
        np.testing.assert_array_equal(model.predict_batch(frame.to_numpy()), expected)


def test_an_onnx_model_of_several_inputs_is_fed_its_tensors_by_name(
    start_server: StartServer, saved: dict[str, Path]
) -> None:
    url, model = _serve(start_server, saved["onnx_pair"])
    assert model.flavor == "onnx"
    rng = np.random.default_rng(1)
    a, b = (rng.normal(size=(4, 2)).astype(np.float32) for _ in range(2))
    expected = mlflow.pyfunc.load_model(str(saved["onnx_pair"])).predict({"a": a, "b": b})
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    inputs = []
    for tensor_name, array in (("b", b), ("a", a)):  # not in the model's order
        tensor = triton.InferInput(tensor_name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array, binary_data=False)
        inputs.append(tensor)
    result = client.infer("onnx_pair", inputs)
    for output in ("sum", "prod"):
        np.testing.assert_array_equal(result.as_numpy(output), expected[output])
    client.close()
    body = {"inputs": {"a": a.tolist(), "b": b.tolist()}}
    answer = httpx.post(f"{url}/invocations", json=body)
    assert answer.json() == json.loads(encode_predictions(expected))


@pytest.mark.parametrize("name", ["xgb_tensor", "onnx_unsigned"])
def test_models_the_fast_path_cannot_take_go_through_pyfunc(
    start_server: StartServer,
    saved: dict[str, Path],
    cancer: tuple[pd.DataFrame, pd.Series],
    name: str,
) -> None:
    url, model = _serve(start_server, saved[name])
    assert model.flavor == "pyfunc"
    rows = _rows(name, saved, cancer).to_numpy()
    expected = mlflow.pyfunc.load_model(str(saved[name])).predict(rows)
    answer = httpx.post(f"{url}/invocations", json={"inputs": rows.tolist()})
    assert answer.status_code == 200, answer.text
    assert answer.json() == json.loads(encode_predictions(expected))
    if name == "xgb_tensor":
        native = mlflow.xgboost.load_model(str(saved[name]))
        np.testing.assert_array_equal(expected, native.predict(_rows(name, saved, cancer)))
