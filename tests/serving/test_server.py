"""The model server over real HTTP: V2 with the real tritonclient (JSON and binary
tensors), MLflow's /invocations and plain JSON, batching under concurrency, health,
metrics and every bad-input path."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import HistGradientBoostingClassifier

from modelyard.monitoring.metrics import ServingMetrics
from modelyard.serving.app import ModelServer, create_server_app
from modelyard.serving.models import Batching, ServedModel, load_model
from modelyard.serving.payloads import PayloadLogger
from modelyard.training.registry import own_types
from tests.conftest import LiveServer

pytestmark = pytest.mark.integration


class Fussy(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Doubles ``x``; raises when it sees a negative number."""

    def predict(self, context: object, model_input: pd.DataFrame) -> np.ndarray:
        if (model_input["x"] < 0).any():
            raise ValueError("negative input")
        return (model_input["x"] * 2).to_numpy()


@pytest.fixture(scope="module")
def cancer() -> tuple[pd.DataFrame, HistGradientBoostingClassifier]:
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.drop(columns="target")
    return frame, HistGradientBoostingClassifier(max_iter=20).fit(frame, data.target)


@pytest.fixture(scope="module")
def model_dirs(
    tmp_path_factory: pytest.TempPathFactory,
    cancer: tuple[pd.DataFrame, HistGradientBoostingClassifier],
) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    frame, classifier = cancer
    mlflow.sklearn.save_model(
        classifier,
        folder / "cancer",
        input_example=frame.head(3),
        signature=mlflow.models.infer_signature(frame, classifier.predict(frame)),
        pip_requirements=["scikit-learn"],
        skops_trusted_types=own_types(classifier),
    )
    example = pd.DataFrame({"x": [1.0, 2.0]})
    mlflow.pyfunc.save_model(
        folder / "fussy",
        python_model=Fussy(),
        input_example=example,
        signature=mlflow.models.infer_signature(example, np.array([2.0, 4.0])),
        pip_requirements=["mlflow"],
    )
    return {"cancer": folder / "cancer", "fussy": folder / "fussy"}


@pytest.fixture
def served(model_dirs: dict[str, Path], tmp_path: Path) -> Iterator[tuple[str, ModelServer]]:
    metrics = ServingMetrics()
    models: list[ServedModel] = [
        load_model(
            str(path),
            batching=Batching(max_batch_size=32, max_latency_ms=5),
            on_batch=lambda name, rows: metrics.batch_size.labels(name).observe(rows),
        )
        for path in model_dirs.values()
    ]
    payloads = PayloadLogger(str(tmp_path / "store"), sample=1.0, flush_seconds=0.1)
    server = ModelServer(
        models,
        deployment="test",
        max_request_bytes=256 * 1024,
        metrics=metrics,
        payloads=payloads,
    )
    live = LiveServer(create_server_app(server))
    live.start()
    try:
        yield live.url, server
    finally:
        live.stop()
        payloads.close()


def _inputs(frame: pd.DataFrame, binary: bool) -> list[triton.InferInput]:
    inputs = []
    for column in frame.columns:
        tensor = triton.InferInput(column, [len(frame), 1], "FP64")
        tensor.set_data_from_numpy(frame[[column]].to_numpy(np.float64), binary_data=binary)
        inputs.append(tensor)
    return inputs


@pytest.mark.parametrize("binary", [True, False])
def test_v2_with_the_real_triton_client(
    served: tuple[str, ModelServer],
    cancer: tuple[pd.DataFrame, HistGradientBoostingClassifier],
    binary: bool,
) -> None:
    url, _ = served
    frame, classifier = cancer
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("cancer")
    metadata = client.get_model_metadata("cancer")
    assert metadata["platform"] == "sklearn"  # the native fast path
    assert [i["name"] for i in metadata["inputs"]] == list(frame.columns)
    output = metadata["outputs"][0]["name"]
    wanted = [triton.InferRequestedOutput(output, binary_data=binary)]
    result = client.infer("cancer", _inputs(frame.head(50), binary), outputs=wanted)
    np.testing.assert_array_equal(result.as_numpy(output), classifier.predict(frame.head(50)))
    versioned = client.infer("cancer", _inputs(frame.head(2), binary), model_version="1")
    assert versioned.get_response()["model_version"] == "1"
    client.close()


def test_invocations_and_plain_json_answer_as_mlflow_does(
    served: tuple[str, ModelServer],
    cancer: tuple[pd.DataFrame, HistGradientBoostingClassifier],
) -> None:
    url, _ = served
    frame, classifier = cancer
    rows = frame.head(5)
    expected = classifier.predict(rows).tolist()
    with httpx.Client(base_url=url) as http:
        split = {"dataframe_split": rows.to_dict(orient="split")}
        assert http.post("/invocations?model=cancer", json=split).json() == {
            "predictions": expected
        }
        records = {"dataframe_records": rows.to_dict(orient="records")}
        assert (
            http.post("/invocations?model=cancer", json=records).json()["predictions"] == expected
        )
        csv = rows.to_csv(index=False)
        answer = http.post(
            "/invocations?model=cancer", content=csv, headers={"content-type": "text/csv"}
        )
        assert answer.json()["predictions"] == expected
        instances = {"instances": rows.to_dict(orient="records")}
        assert (
            http.post("/v1/models/cancer:predict", json=instances).json()["predictions"] == expected
        )
        doubled = http.post("/invocations?model=fussy", json={"dataframe_records": [{"x": 3.0}]})
        assert doubled.json() == {"predictions": [6.0]}


def test_concurrent_requests_are_batched_and_answered_exactly(
    served: tuple[str, ModelServer],
    cancer: tuple[pd.DataFrame, HistGradientBoostingClassifier],
) -> None:
    url, _ = served
    frame, classifier = cancer
    chunks = [frame.iloc[i : i + 3] for i in range(0, 192, 3)]

    async def main() -> list[list[int]]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            answers = await asyncio.gather(
                *(
                    http.post(
                        "/invocations?model=cancer",
                        json={"dataframe_split": c.to_dict(orient="split")},
                    )
                    for c in chunks
                )
            )
        return [a.json()["predictions"] for a in answers]

    for chunk, answer in zip(chunks, asyncio.run(main()), strict=True):
        assert answer == classifier.predict(chunk).tolist()  # as if predicted alone
    metrics = httpx.get(f"{url}/metrics").text
    count = _sample(metrics, 'modelyard_batch_size_count{model="cancer"}')
    total = _sample(metrics, 'modelyard_batch_size_sum{model="cancer"}')
    assert total >= 192  # every row went through a batch (plus the warm-up-free rest)
    assert count < len(chunks)  # merged: fewer predict calls than requests
    assert (
        'modelyard_requests_total{code="200",deployment="test",model="cancer",version="1"}'
        in metrics
    )


def _sample(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in the metrics")


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "code"),
    [
        ("/v2/models/nothing/infer", b"{}", {}, 404, "model/not_served"),
        ("/v2/models/cancer/infer", b"not json", {}, 400, "request/invalid"),
        ("/v2/models/cancer/infer", b'{"inputs": []}', {}, 400, "request/missing_input"),
        (
            "/v2/models/fussy/infer",
            b'{"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [1.0]},'
            b' {"name": "y", "shape": [1, 1], "datatype": "FP64", "data": [1.0]}]}',
            {},
            400,
            "request/unknown_input",
        ),
        (
            "/v2/models/fussy/infer",
            b'{"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP64", "data": [1.0]}]}',
            {},
            400,
            "request/shape",
        ),
        (
            "/v2/models/fussy/infer",
            b'{"inputs": [{"name": "x", "shape": [1, 1], "datatype": "BYTES", "data": ["a"]}]}',
            {},
            400,
            "request/datatype",
        ),
        ("/invocations?model=cancer", b"a=1", {"content-type": "text/plain"}, 415, None),
        ("/invocations?model=cancer", b'{"dataframe_records": [{"x": 1}]}', {}, 400, None),
        ("/invocations", b"{}", {}, 400, "request/which_model"),
        ("/v2/models/cancer/infer", b"x" * (300 * 1024), {}, 413, "request/too_large"),
    ],
)
def test_bad_requests_get_clear_errors_and_lose_nothing(
    served: tuple[str, ModelServer],
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    code: str | None,
) -> None:
    url, _ = served
    with httpx.Client(base_url=url) as http:
        answer = http.post(
            path, content=body, headers={"content-type": "application/json", **headers}
        )
        assert answer.status_code == status, answer.text
        error = answer.json()["error"]
        assert error["message"]
        if code is not None:
            assert error["code"] == code
        assert http.get("/v2/health/ready").status_code == 200  # still serving


def test_a_model_that_raises_is_a_500_and_the_server_goes_on(
    served: tuple[str, ModelServer],
) -> None:
    url, _ = served
    with httpx.Client(base_url=url) as http:
        broken = http.post("/invocations?model=fussy", json={"dataframe_records": [{"x": -1.0}]})
        assert broken.status_code == 500
        assert broken.json()["error"]["code"] == "model/predict_failed"
        assert "negative input" in broken.json()["error"]["message"]
        fine = http.post("/invocations?model=fussy", json={"dataframe_records": [{"x": 1.0}]})
        assert fine.json() == {"predictions": [2.0]}
        metrics = http.get("/metrics").text
    assert 'code="500",deployment="test",model="fussy"' in metrics


def test_readiness_follows_draining(served: tuple[str, ModelServer]) -> None:
    url, server = served
    with httpx.Client(base_url=url) as http:
        assert http.get("/ping").status_code == 200
        server.draining = True
        assert http.get("/v2/health/ready").status_code == 503
        assert http.get("/v2/models/cancer/ready").status_code == 503
        assert http.get("/ping").status_code == 503
        assert http.get("/v2/health/live").status_code == 200  # alive while it drains


def test_a_model_that_fails_on_its_own_example_never_becomes_ready(tmp_path: Path) -> None:
    from modelyard.serving.models import ModelLoadError

    example = pd.DataFrame({"x": [-1.0]})
    mlflow.pyfunc.save_model(
        tmp_path / "broken",
        python_model=Fussy(),
        input_example=example,
        pip_requirements=["mlflow"],
    )
    with pytest.raises(ModelLoadError, match="failed on its input example while warming up"):
        load_model(str(tmp_path / "broken"))
    with pytest.raises(ModelLoadError, match="neither a models:/ or runs:/ URI nor a folder"):
        load_model(str(tmp_path / "nowhere"))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(
        [
            "/v2/models/cancer/infer",
            "/v2/models/fussy/infer",
            "/invocations?model=fussy",
            "/v1/models/fussy:predict",
        ]
    ),
    body=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=8), inner, max_size=4)
            ),
            max_leaves=12,
        ).map(lambda value: __import__("json").dumps(value).encode()),
    ),
)
def test_no_input_crashes_the_server(
    served: tuple[str, ModelServer], path: str, body: bytes
) -> None:
    url, _ = served
    answer = httpx.post(url + path, content=body, headers={"content-type": "application/json"})
    assert answer.status_code in (200, 400, 413, 415, 500)
    if answer.status_code == 500:  # only the model itself may fail, never the server
        assert answer.json()["error"]["code"] == "model/predict_failed"


def test_answered_requests_are_logged_with_their_trace_id(
    served: tuple[str, ModelServer], tmp_path: Path
) -> None:
    url, server = served
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with httpx.Client(base_url=url) as http:
        body = {"dataframe_records": [{"x": 4.0}]}
        assert (
            http.post(
                "/invocations?model=fussy", json=body, headers={"traceparent": traceparent}
            ).status_code
            == 200
        )
        assert (
            http.post(
                "/invocations?model=fussy", json={"dataframe_records": [{"x": -1.0}]}
            ).status_code
            == 500
        )
    assert server.payloads is not None
    server.payloads.close()
    (logged,) = pq.read_table(
        tmp_path / "store" / "payloads" / "fussy"
    ).to_pylist()  # the 500 is not a payload
    assert logged["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert json.loads(logged["inputs"]) == {"x": [4.0]}
    assert json.loads(logged["outputs"]) == [8.0]
    assert (logged["model"], logged["version"]) == ("fussy", "1")
