"""The model server: an ASGI app (Starlette) answering for one or more models.

Routes:
- Open Inference Protocol (KServe V2): ``GET /v2``, ``/v2/health/live``,
  ``/v2/health/ready``, ``/v2/models/{name}[/versions/{v}]`` (metadata) and ``.../ready``;
  ``POST /v2/models/{name}[/versions/{v}]/infer`` with JSON or binary tensors.
- Its model repository extension, as Triton serves it: ``POST /v2/repository/index``,
  ``POST /v2/repository/models/{name}/load`` (``{"parameters": {"uri": ...}}`` to load
  a new model or another version) and ``.../unload``.
- MLflow's scoring server: ``POST /invocations`` (``?model=`` when several are served),
  ``GET /ping``, ``/health``, ``/version``.
- Plain JSON: ``POST /v1/models/{name}:predict`` with ``{"instances": [...]}`` or
  ``{"inputs": {...}}``.
- ``GET /metrics`` (Prometheus).

It needs no metadata database: models are loaded from MLflow URIs (see
:mod:`modelyard.serving.models`). Errors have the platform's shape; a model that raises
is a 500 and the server goes on.

Every inference request is one span, ``infer <model>``, joined to the caller's trace
(``traceparent``), with children ``decode``, ``queue`` (waiting in the batcher),
``predict`` (the batch it was predicted in) and ``encode`` (and ``load`` when it waited
for its model to load). Children are made from clock readings when the request ends,
and only when the span is recorded (see :mod:`modelyard.monitoring.tracing`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelyard._version import __version__
from modelyard.errors import ModelyardError
from modelyard.monitoring.metrics import ServingMetrics
from modelyard.monitoring.tracing import (
    create_tracer_provider,
    incoming_context,
    record_span,
    trace_id,
)
from modelyard.serving import invocations as mlflow_format
from modelyard.serving import protocol, tensors
from modelyard.serving.batching import BatchTiming
from modelyard.serving.models import (
    ModelNotServedError,
    ServedModel,
)
from modelyard.serving.payloads import PayloadLogger, trace_id_of
from modelyard.serving.repository import (
    ModelRepository,
    ModelState,
    ModelUnavailableError,
)

__all__ = ["ModelNotServedError", "ModelServer", "create_server_app"]

logger = logging.getLogger(__name__)

JSON = "application/json"
BINARY = "application/octet-stream"
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024


class PayloadTooLargeError(ModelyardError):
    http_status = 413
    default_code = "request/too_large"


class PredictFailedError(ModelyardError):
    """The model raised: the user's code failed, not the server."""

    http_status = 500
    default_code = "model/predict_failed"


@dataclass
class Phases:
    """Clock readings (``time.time_ns()``) of one inference request; they become the
    children of its span."""

    started: int  # the request began
    ready: int = 0  # its model was there (after a load, if it waited for one)
    decoded: int = 0  # its rows were ready to predict
    timing: BatchTiming = field(default_factory=BatchTiming)  # queued and predicted
    predicted: int = 0  # the outputs were back
    encoded: int = 0  # the answer was written


Work = Callable[[ServedModel, Phases], Awaitable[Response]]


class ModelServer:
    """The models being served and what the routes share.

    Args:
        models: Models loaded already (more can be loaded through ``repository``).
        deployment: The ``deployment`` label of the metrics.
        max_request_bytes: Bodies larger than this are refused (413).
        metrics: Where requests are counted.
        payloads: Where a sample of answered requests is written.
        repository: The models known here and the memory budget (default: one with no
            budget, holding ``models``).
        tracer_provider: Where request spans go (default: ``create_tracer_provider``).
    """

    def __init__(
        self,
        models: Sequence[ServedModel] = (),
        deployment: str = "standalone",
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        metrics: ServingMetrics | None = None,
        payloads: PayloadLogger | None = None,
        *,
        repository: ModelRepository | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.metrics = metrics or ServingMetrics()
        self.repository = repository or ModelRepository(metrics=self.metrics)
        for model in models:
            self.repository.adopt(model)
        self.payloads = payloads
        self.deployment = deployment
        self.max_request_bytes = max_request_bytes
        self.tracer_provider = tracer_provider or create_tracer_provider("modelyard-model-server")
        self.tracer = self.tracer_provider.get_tracer("modelyard.serving", __version__)
        self.draining = False

    @property
    def ready(self) -> bool:
        """Not draining, and every loaded model ready."""
        return not self.draining and self.repository.ready

    async def answer(
        self, request: Request, name: str, version: str | None, work: Work
    ) -> Response:
        """Run one inference request for model ``name``: counted, timed and traced, its
        model loaded again first if it was unloaded to make room.

        Raises:
            ModelNotServedError: no such model is known here.
        """
        entry = self.repository.entry(name, version)
        phases = Phases(time.time_ns())
        waits_for_load = entry.model is None
        labels = (self.deployment, name)
        with self.tracer.start_as_current_span(
            f"infer {name}",
            context=incoming_context(request.headers),
            kind=trace.SpanKind.SERVER,
            attributes={"modelyard.model.name": name},
        ) as span:
            self.metrics.inflight.labels(*labels).inc()
            started = time.perf_counter()
            served_version = entry.version or ""
            code = 500
            try:
                async with self.repository.serving(entry, version) as model:
                    served_version = model.version
                    phases.ready = time.time_ns()
                    response = await work(model, phases)
                    code = response.status_code
            except ModelyardError as exc:
                code = exc.http_status
                response = error_response(exc)
            finally:
                self.metrics.inflight.labels(*labels).dec()
                self.metrics.requests.labels(self.deployment, name, served_version, str(code)).inc()
                self.metrics.duration.labels(self.deployment, name, served_version).observe(
                    time.perf_counter() - started
                )
            if span.is_recording():
                self._record(span, phases, served_version, code, waits_for_load)
            return response

    def _record(
        self, span: trace.Span, phases: Phases, version: str, code: int, waited: bool
    ) -> None:
        """The request span's attributes and its children, from the clock readings."""
        timing = phases.timing
        span.set_attribute("modelyard.model.version", version)
        span.set_attribute("http.response.status_code", code)
        if code >= 500:
            span.set_status(trace.StatusCode.ERROR)
        if waited and phases.ready:
            record_span(self.tracer, span, "load", phases.started, phases.ready)
        if phases.decoded:
            record_span(self.tracer, span, "decode", phases.ready, phases.decoded)
        if timing.finished_ns:
            span.set_attribute("modelyard.batch.size", timing.batch_rows)
            record_span(self.tracer, span, "queue", timing.queued_ns, timing.started_ns)
            record_span(
                self.tracer,
                span,
                "predict",
                timing.started_ns,
                timing.finished_ns,
                {"modelyard.batch.size": timing.batch_rows},
            )
        if phases.encoded:
            record_span(self.tracer, span, "encode", phases.predicted, phases.encoded)

    def log_payload(
        self, request: Request, model: ServedModel, inputs: Any, outputs: Any, phases: Phases
    ) -> None:
        """A sample of answered requests goes to the payload log (never blocking), with
        the trace id of the request's span."""
        if self.payloads is None:
            return
        self.payloads.record(
            model.name,
            model.version,
            inputs,
            outputs,
            (time.time_ns() - phases.started) / 1e6,
            trace_id(trace.get_current_span())
            or trace_id_of(request.headers.get("traceparent"), request.headers.get("x-request-id")),
        )


def error_response(error: ModelyardError) -> Response:
    return Response(json.dumps(error.to_body()), status_code=error.http_status, media_type=JSON)


async def _body(request: Request, server: ModelServer) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > server.max_request_bytes:
        raise PayloadTooLargeError(_too_large(server))
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > server.max_request_bytes:
            raise PayloadTooLargeError(_too_large(server))
    return bytes(body)


def _too_large(server: ModelServer) -> str:
    return f"the request body is larger than {server.max_request_bytes:,} bytes"


async def _predict(model: ServedModel, rows: Any, phases: Phases) -> Any:
    phases.decoded = time.time_ns()
    try:
        result = await model.predict(rows, phases.timing)
    except ModelyardError:
        raise
    except Exception as exc:
        logger.warning("model %s raised", model.name, exc_info=True)
        raise PredictFailedError(
            f"model {model.name!r} raised {type(exc).__name__}: {exc}",
            details={"model": model.name, "version": model.version},
        ) from exc
    phases.predicted = time.time_ns()
    return result


def _output_tensors(model: ServedModel, result: Any) -> dict[str, np.ndarray]:
    """A model's result as named V2 output tensors."""
    if isinstance(result, dict):
        return {str(k): np.asarray(v) for k, v in result.items()}
    if hasattr(result, "columns") and hasattr(result, "to_numpy"):  # a DataFrame
        return {str(c): result[c].to_numpy() for c in result.columns}
    names = [spec.name for spec in model.outputs] or ["output-0"]
    return {names[0]: np.asarray(result)}


# -- routes -------------------------------------------------------------------------------


def _server(request: Request) -> ModelServer:
    server: ModelServer = request.app.state.server
    return server


def _loaded(request: Request) -> ServedModel:
    """The loaded model a route names (``{name}``, and ``{version}`` where given)."""
    entry = _server(request).repository.entry(
        request.path_params["name"], request.path_params.get("version")
    )
    if entry.model is None:
        raise ModelUnavailableError(
            f"model {entry.name!r} is not loaded ({entry.state.value.lower()}"
            + (f": {entry.reason})" if entry.reason else ")"),
            details={"model": entry.name, "state": entry.state.value},
        )
    return entry.model


Handler = Callable[[Request], Awaitable[Response]]


def _shaped(handler: Handler) -> Handler:
    """A route whose refusals (unknown model, bad request) answer in the error shape."""

    async def route(request: Request) -> Response:
        try:
            return await handler(request)
        except ModelyardError as exc:
            return error_response(exc)

    return route


async def live(request: Request) -> Response:
    return Response(b'{"live":true}', media_type=JSON)


async def ready(request: Request) -> Response:
    server = _server(request)
    ok = server.ready
    body = json.dumps({"ready": ok, "draining": server.draining})
    return Response(body, status_code=200 if ok else 503, media_type=JSON)


async def server_metadata(request: Request) -> Response:
    document = json.loads(tensors.server_metadata())
    document["extensions"].append("model_repository")
    return Response(json.dumps(document), media_type=JSON)


async def model_metadata(request: Request) -> Response:
    model = _loaded(request)
    body = tensors.model_metadata(
        model.name, [model.version], model.platform, model.inputs, model.outputs
    )
    return Response(body, media_type=JSON)


async def model_ready(request: Request) -> Response:
    server = _server(request)
    entry = server.repository.entry(request.path_params["name"], request.path_params.get("version"))
    ok = entry.model is not None and entry.model.ready and not server.draining
    body = json.dumps({"name": entry.name, "ready": ok, "state": entry.state.value})
    return Response(body, status_code=200 if ok else 503, media_type=JSON)


async def infer(request: Request) -> Response:
    server = _server(request)

    async def work(model: ServedModel, phases: Phases) -> Response:
        body = await _body(request, server)
        header = request.headers.get("inference-header-content-length")
        decoded = protocol.decode_v2(
            body,
            int(header) if header and header.isdigit() else None,
            model.inputs or None,
        )
        result = await _predict(model, model.rows(decoded.inputs), phases)
        outputs = _output_tensors(model, result)
        if decoded.outputs_wanted:
            missing = [name for name in decoded.outputs_wanted if name not in outputs]
            if missing:
                raise tensors.ProtocolError(
                    f"model {model.name!r} has no output(s) {missing}; it has {sorted(outputs)}",
                    code="request/unknown_output",
                )
            outputs = {name: outputs[name] for name in decoded.outputs_wanted}
        payload, header_length = protocol.encode_v2(
            model.name, model.version, decoded.id, outputs, decoded.binary_outputs
        )
        phases.encoded = time.time_ns()
        server.log_payload(request, model, decoded.inputs, outputs, phases)
        if header_length is None:
            return Response(payload, media_type=JSON)
        return Response(
            payload,
            media_type=BINARY,
            headers={"Inference-Header-Content-Length": str(header_length)},
        )

    params = request.path_params
    return await server.answer(request, params["name"], params.get("version"), work)


async def invocations(request: Request) -> Response:
    server = _server(request)
    name = request.query_params.get("model")
    known = server.repository.entries
    if name is None and len(known) == 1:
        name = next(iter(known))
    if name is None:
        raise tensors.ProtocolError(
            f"several models are served here: say which with ?model= ({sorted(known)})",
            code="request/which_model",
        )

    async def work(model: ServedModel, phases: Phases) -> Response:
        body = await _body(request, server)
        content_type = request.headers.get("content-type", JSON)
        numeric = (
            mlflow_format.numeric_rows(body, content_type, model.columns)
            if model.columns and model.flavor != "pyfunc"
            else None
        )
        rows: Any
        inputs: Any
        if numeric is not None:  # the native model's rows, with no DataFrame between
            rows, inputs, unwrapped = numeric, numeric, False
        else:
            decoded = mlflow_format.decode_invocations(body, content_type)
            rows = _invocation_rows(model, decoded.data)
            inputs, unwrapped = decoded.data, decoded.unwrapped
        result = await _predict(model, rows, phases)
        answer = mlflow_format.encode_predictions(result, unwrapped=unwrapped)
        phases.encoded = time.time_ns()
        server.log_payload(request, model, inputs, result, phases)
        return Response(answer, media_type=JSON)

    return await server.answer(request, name, None, work)


def _invocation_rows(model: ServedModel, data: Any) -> Any:
    """An ``/invocations`` body as the model's batch: a DataFrame is put in the
    signature's column order (a missing column is named), for the native path as a
    numpy array."""
    if model.columns and hasattr(data, "columns"):
        missing = [c for c in model.columns if c not in data.columns]
        if missing:
            raise tensors.ProtocolError(
                f"model {model.name!r} needs column(s) {missing}",
                code="request/missing_input",
                details={"missing": missing},
            )
        if model.flavor == "pyfunc":
            return data
        try:
            return data[model.columns].to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise tensors.ProtocolError(
                f"model {model.name!r} takes numbers in {model.columns}: {exc}",
                code="request/datatype",
            ) from exc
    return data


async def predict_v1(request: Request) -> Response:
    server = _server(request)

    async def work(model: ServedModel, phases: Phases) -> Response:
        body = await _body(request, server)
        decoded = protocol.decode_instances(body, model.inputs or None)
        rows = model.rows(decoded) if isinstance(decoded, dict) else decoded
        result = await _predict(model, rows, phases)
        answer = mlflow_format.encode_predictions(result)
        phases.encoded = time.time_ns()
        server.log_payload(request, model, decoded, result, phases)
        return Response(answer, media_type=JSON)

    return await server.answer(request, request.path_params["name"], None, work)


# -- the model repository extension --------------------------------------------------------


async def _parameters(request: Request) -> dict[str, Any]:
    """A repository request's ``parameters`` (its body may be empty)."""
    body = await _body(request, _server(request))
    if not body.strip():
        return {}
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise tensors.ProtocolError(f"the body is not JSON: {exc}", details={"field": "$"}) from exc
    if not isinstance(document, dict):
        raise tensors.ProtocolError("the body must be a JSON object", details={"field": "$"})
    parameters = document.get("parameters", {})
    if not isinstance(parameters, dict):
        raise tensors.ProtocolError(
            "parameters must be a JSON object", details={"field": "parameters"}
        )
    if "ready" in document:  # the index's filter
        parameters = {**parameters, "ready": document["ready"]}
    return parameters


def _load_uri(parameters: dict[str, Any]) -> str | None:
    """The URI a load names: ``parameters.uri``, or ``uri`` in ``parameters.config`` (a
    JSON object as text: what ``tritonclient``'s ``load_model(config=...)`` sends)."""
    uri = parameters.get("uri")
    config = parameters.get("config")
    if uri is None and isinstance(config, str):
        try:
            settings = json.loads(config)
        except ValueError as exc:
            raise tensors.ProtocolError(
                f"parameters.config is not JSON: {exc}", details={"field": "parameters.config"}
            ) from exc
        uri = settings.get("uri") if isinstance(settings, dict) else None
    if uri is not None and (not isinstance(uri, str) or not uri):
        raise tensors.ProtocolError(
            "the uri must be a non-empty string", details={"field": "parameters.uri"}
        )
    return uri


async def repository_index(request: Request) -> Response:
    parameters = await _parameters(request)
    entries = _server(request).repository.index()
    if parameters.get("ready") is True:
        entries = [e for e in entries if e.state is ModelState.READY]
    return Response(json.dumps([e.describe() for e in entries]), media_type=JSON)


async def repository_load(request: Request) -> Response:
    server = _server(request)
    name = request.path_params["name"]
    uri = _load_uri(await _parameters(request))
    await server.repository.load(name, uri)
    return Response(json.dumps(server.repository.entry(name).describe()), media_type=JSON)


async def repository_unload(request: Request) -> Response:
    server = _server(request)
    name = request.path_params["name"]
    await _parameters(request)  # unload_dependents: there are no ensembles here
    await server.repository.unload(name)
    return Response(json.dumps(server.repository.entry(name).describe()), media_type=JSON)


# -- the rest -------------------------------------------------------------------------------


async def ping(request: Request) -> Response:
    ok = _server(request).ready
    return Response(b"\n", status_code=200 if ok else 503, media_type=JSON)


async def version(request: Request) -> Response:
    return Response(__version__, media_type="text/plain")


async def metrics(request: Request) -> Response:
    return Response(
        generate_latest(_server(request).metrics.registry), media_type=CONTENT_TYPE_LATEST
    )


def create_server_app(server: ModelServer) -> Starlette:
    """The ASGI app answering for ``server``'s models; it unloads them and flushes the
    spans when it stops."""
    routes = [
        Route("/v2", server_metadata),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2/models/{name}", _shaped(model_metadata)),
        Route("/v2/models/{name}/ready", _shaped(model_ready)),
        Route("/v2/models/{name}/infer", _shaped(infer), methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}", _shaped(model_metadata)),
        Route("/v2/models/{name}/versions/{version}/ready", _shaped(model_ready)),
        Route("/v2/models/{name}/versions/{version}/infer", _shaped(infer), methods=["POST"]),
        Route("/v2/repository/index", _shaped(repository_index), methods=["POST"]),
        Route("/v2/repository/models/{name}/load", _shaped(repository_load), methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", _shaped(repository_unload), methods=["POST"]),
        Route("/v1/models/{name}:predict", _shaped(predict_v1), methods=["POST"]),
        Route("/invocations", _shaped(invocations), methods=["POST"]),
        Route("/ping", ping),
        Route("/health", ping),
        Route("/version", version),
        Route("/metrics", metrics),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await server.repository.close()
        server.tracer_provider.shutdown()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.server = server
    return app
