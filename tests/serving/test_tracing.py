"""OpenTelemetry spans of the model server: one per inference request with its phases
as children, joined to the caller's trace (W3C traceparent), whose trace id the payload
log and the JSON logs carry."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pyarrow.parquet as pq
import pytest
import tritonclient.http as triton
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pythonjsonlogger.json import JsonFormatter
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from modelyard.monitoring.logging import TraceContextFilter
from modelyard.monitoring.tracing import create_tracer_provider
from modelyard.serving.app import ModelServer
from modelyard.serving.models import Batching, ServedModel, load_model
from modelyard.serving.payloads import PayloadLogger
from modelyard.training.registry import own_types
from tests.serving.conftest import StartServer
from tests.serving.repository_models import Doubler

pytestmark = pytest.mark.integration

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{CALLER}-01"
PHASES = ("decode", "queue", "predict", "encode")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("traced")
    data = load_iris(as_frame=True)
    frame = data.frame.drop(columns="target")
    model = LogisticRegression(max_iter=500).fit(frame, data.target)
    mlflow.sklearn.save_model(
        model,
        folder / "iris",
        input_example=frame.head(2),
        signature=mlflow.models.infer_signature(frame, model.predict(frame)),
        pip_requirements=["scikit-learn"],
        skops_trusted_types=own_types(model),
    )
    mlflow.pyfunc.save_model(
        folder / "doubler",
        python_model=Doubler(),
        input_example=pd.DataFrame({"x": [1.0]}),
        pip_requirements=["mlflow"],
    )
    return {"iris": folder / "iris", "doubler": folder / "doubler"}


@pytest.fixture
def models(folders: dict[str, Path]) -> list[ServedModel]:
    batching = Batching(max_batch_size=64, max_latency_ms=20)
    return [load_model(str(path), batching=batching) for path in folders.values()]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced(
    start_server: StartServer,
    models: list[ServedModel],
    exporter: InMemorySpanExporter,
    tmp_path: Path,
) -> Iterator[tuple[str, PayloadLogger]]:
    payloads = PayloadLogger(str(tmp_path / "store"), sample=1.0, flush_seconds=0.1)
    provider = create_tracer_provider("model-server-test", exporter=exporter)
    server = ModelServer(models, payloads=payloads, tracer_provider=provider)
    yield start_server(server), payloads
    payloads.close()


def _iris_rows() -> pd.DataFrame:
    return load_iris(as_frame=True).frame.drop(columns="target").head(3)


def _request(spans: tuple[ReadableSpan, ...], root: ReadableSpan) -> dict[str, ReadableSpan]:
    """The children of ``root`` by name."""
    return {
        s.name: s
        for s in spans
        if s.parent is not None and s.parent.span_id == root.context.span_id
    }


def test_a_request_is_one_span_with_its_phases_in_the_callers_trace(
    traced: tuple[str, PayloadLogger], exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    url, payloads = traced
    rows = _iris_rows()
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    inputs = []
    for column in rows.columns:
        tensor = triton.InferInput(column, [len(rows), 1], "FP64")
        tensor.set_data_from_numpy(rows[[column]].to_numpy(), binary_data=True)
        inputs.append(tensor)
    client.infer("iris", inputs, headers={"traceparent": TRACEPARENT})
    client.close()

    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.name == "infer iris"]
    assert root.kind is SpanKind.SERVER
    assert format(root.context.trace_id, "032x") == TRACE  # the caller's trace
    assert root.parent is not None
    assert format(root.parent.span_id, "016x") == CALLER  # under the caller's span
    assert root.attributes is not None
    assert root.attributes["modelyard.model.name"] == "iris"
    assert root.attributes["modelyard.model.version"] == "1"
    assert root.attributes["modelyard.batch.size"] == 3
    assert root.attributes["http.response.status_code"] == 200
    children = _request(spans, root)
    assert sorted(children) == sorted(PHASES)
    assert all(c.context.trace_id == root.context.trace_id for c in children.values())
    assert children["predict"].attributes == {"modelyard.batch.size": 3}
    times = [root.start_time]
    for name in PHASES:  # one after the other, inside the request
        times += [children[name].start_time, children[name].end_time]
    times.append(root.end_time)
    assert times == sorted(times)

    payloads.close()
    (logged,) = pq.read_table(tmp_path / "store" / "payloads" / "iris").to_pylist()
    assert logged["trace_id"] == TRACE


def test_a_request_without_a_traceparent_starts_a_trace_the_payload_log_keeps(
    traced: tuple[str, PayloadLogger], exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    url, payloads = traced
    answer = httpx.post(
        f"{url}/invocations?model=doubler",
        json={"dataframe_records": [{"x": 0.5}]},
        headers={"x-request-id": "not-a-trace-id"},
    )
    assert answer.json() == {"predictions": [1.0]}
    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.name == "infer doubler"]
    assert root.parent is None  # a trace of its own
    assert sorted(_request(spans, root)) == sorted(PHASES)
    payloads.close()
    (logged,) = pq.read_table(tmp_path / "store" / "payloads" / "doubler").to_pylist()
    assert logged["trace_id"] == format(root.context.trace_id, "032x")


def test_json_logs_of_a_failing_request_carry_its_trace_id(
    traced: tuple[str, PayloadLogger], exporter: InMemorySpanExporter
) -> None:
    url, _ = traced
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(JsonFormatter("%(levelname)s %(name)s %(message)s"))
    app_logger = logging.getLogger("modelyard.serving.app")
    app_logger.addHandler(handler)
    try:
        answer = httpx.post(
            f"{url}/v1/models/doubler:predict",
            json={"instances": [{"x": -1.0}]},
            headers={"traceparent": TRACEPARENT},
        )
    finally:
        app_logger.removeHandler(handler)
    assert answer.status_code == 500
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["message"] == "model doubler raised"
    assert line["trace_id"] == TRACE
    (root,) = [s for s in exporter.get_finished_spans() if s.name == "infer doubler"]
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes is not None
    assert root.attributes["http.response.status_code"] == 500
    assert format(root.context.span_id, "016x") == line["span_id"]


def test_requests_batched_together_share_one_predict_span_each(
    traced: tuple[str, PayloadLogger], exporter: InMemorySpanExporter
) -> None:
    url, _ = traced
    rows = {"dataframe_split": _iris_rows().head(1).to_dict(orient="split")}

    async def main() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            answers = await asyncio.gather(
                *(http.post("/invocations?model=iris", json=rows) for _ in range(16))
            )
        assert all(a.status_code == 200 for a in answers)

    asyncio.run(main())
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.name == "infer iris"]
    assert len({r.context.trace_id for r in roots}) == 16  # a trace per request
    predicts = [_request(spans, root)["predict"] for root in roots]
    sizes = [p.attributes["modelyard.batch.size"] for p in predicts if p.attributes]
    assert max(sizes) > 1  # batched with others: the batch's rows, not the request's
    shared = [p for p in predicts if p.attributes and p.attributes["modelyard.batch.size"] > 1]
    assert len({(p.start_time, p.end_time) for p in shared}) < len(shared)  # one call


def test_without_an_exporter_spans_are_not_recorded_yet_ids_flow(
    start_server: StartServer,
    models: list[ServedModel],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    provider = create_tracer_provider("model-server-test")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    payloads = PayloadLogger(str(tmp_path / "store"), sample=1.0, flush_seconds=0.1)
    url = start_server(ModelServer(models, payloads=payloads, tracer_provider=provider))
    body = {"dataframe_records": [{"x": 0.5}]}
    answer = httpx.post(
        f"{url}/invocations?model=doubler", json=body, headers={"traceparent": TRACEPARENT}
    )
    assert answer.status_code == 200
    assert exporter.get_finished_spans() == ()  # nothing recorded: no one would see it
    payloads.close()
    (logged,) = pq.read_table(tmp_path / "store" / "payloads" / "doubler").to_pylist()
    assert logged["trace_id"] == TRACE  # yet the caller's trace id is kept

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")  # asked for: recorded
    recorded = create_tracer_provider("model-server-test")
    recorded.add_span_processor(SimpleSpanProcessor(exporter))
    with recorded.get_tracer("test").start_as_current_span("probe"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["probe"]
