"""The model server: an ASGI app (Starlette) answering for one or more loaded models.

Routes:
- Open Inference Protocol (KServe V2): ``GET /v2``, ``/v2/health/live``,
  ``/v2/health/ready``, ``/v2/models/{name}[/versions/{v}]`` (metadata) and ``.../ready``;
  ``POST /v2/models/{name}[/versions/{v}]/infer`` with JSON or binary tensors.
- MLflow's scoring server: ``POST /invocations`` (``?model=`` when several are served),
  ``GET /ping``, ``/health``, ``/version``.
- Plain JSON: ``POST /v1/models/{name}:predict`` with ``{"instances": [...]}`` or
  ``{"inputs": {...}}``.
- ``GET /metrics`` (Prometheus).

It needs no metadata database: models come loaded (see :mod:`modelyard.serving.models`).
Errors have the platform's shape; a model that raises is a 500 and the server goes on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelyard._version import __version__
from modelyard.errors import ModelyardError, NotFoundError
from modelyard.monitoring.metrics import ServingMetrics
from modelyard.serving import invocations as mlflow_format
from modelyard.serving import protocol, tensors
from modelyard.serving.models import ServedModel
from modelyard.serving.payloads import PayloadLogger, trace_id_of

logger = logging.getLogger(__name__)

JSON = "application/json"
BINARY = "application/octet-stream"
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024


class ModelNotServedError(NotFoundError):
    default_code = "model/not_served"


class PayloadTooLargeError(ModelyardError):
    http_status = 413
    default_code = "request/too_large"


class PredictFailedError(ModelyardError):
    """The model raised: the user's code failed, not the server."""

    http_status = 500
    default_code = "model/predict_failed"


class ModelServer:
    """The models being served and what the routes share."""

    def __init__(
        self,
        models: Sequence[ServedModel],
        deployment: str = "standalone",
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        metrics: ServingMetrics | None = None,
        payloads: PayloadLogger | None = None,
    ) -> None:
        self.models = {model.name: model for model in models}
        self.payloads = payloads
        self.deployment = deployment
        self.max_request_bytes = max_request_bytes
        self.metrics = metrics or ServingMetrics()
        self.draining = False

    def model(self, name: str, version: str | None = None) -> ServedModel:
        model = self.models.get(name)
        if model is None or (version is not None and version != model.version):
            wanted = f"{name} version {version}" if version else name
            raise ModelNotServedError(
                f"model {wanted!r} is not served here (serving: {sorted(self.models)})",
                details={"model": name, "version": version},
            )
        return model

    @property
    def ready(self) -> bool:
        return not self.draining and all(m.ready for m in self.models.values())

    async def answer(self, model: ServedModel, work: Callable[[], Awaitable[Response]]) -> Response:
        """Run one inference request for ``model``, counted and timed."""
        labels = (self.deployment, model.name)
        self.metrics.inflight.labels(*labels).inc()
        model.in_flight += 1
        started = time.perf_counter()
        code = 500
        try:
            response = await work()
            code = response.status_code
            return response
        except ModelyardError as exc:
            code = exc.http_status
            return error_response(exc)
        finally:
            model.in_flight -= 1
            self.metrics.inflight.labels(*labels).dec()
            self.metrics.requests.labels(
                self.deployment, model.name, model.version, str(code)
            ).inc()
            self.metrics.duration.labels(self.deployment, model.name, model.version).observe(
                time.perf_counter() - started
            )


def _log_payload(
    request: Request, model: ServedModel, inputs: Any, outputs: Any, started: float
) -> None:
    """A sample of answered requests goes to the payload log (never blocking)."""
    server = _server(request)
    if server.payloads is None:
        return
    server.payloads.record(
        model.name,
        model.version,
        inputs,
        outputs,
        (time.perf_counter() - started) * 1000,
        trace_id_of(request.headers.get("traceparent"), request.headers.get("x-request-id")),
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


async def _predict(model: ServedModel, rows: Any) -> Any:
    try:
        return await model.predict(rows)
    except ModelyardError:
        raise
    except Exception as exc:
        logger.warning("model %s raised", model.name, exc_info=True)
        raise PredictFailedError(
            f"model {model.name!r} raised {type(exc).__name__}: {exc}",
            details={"model": model.name, "version": model.version},
        ) from exc


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


def _model(request: Request) -> ServedModel:
    """The model a route names (``{name}``, and ``{version}`` where given)."""
    return _server(request).model(request.path_params["name"], request.path_params.get("version"))


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
    return Response(tensors.server_metadata(), media_type=JSON)


async def model_metadata(request: Request) -> Response:
    model = _model(request)
    body = tensors.model_metadata(
        model.name, [model.version], model.platform, model.inputs, model.outputs
    )
    return Response(body, media_type=JSON)


async def model_ready(request: Request) -> Response:
    server = _server(request)
    model = _model(request)
    ok = model.ready and not server.draining
    body = json.dumps({"name": model.name, "ready": ok})
    return Response(body, status_code=200 if ok else 503, media_type=JSON)


async def infer(request: Request) -> Response:
    server = _server(request)
    model = _model(request)

    async def work() -> Response:
        started = time.perf_counter()
        body = await _body(request, server)
        header = request.headers.get("inference-header-content-length")
        decoded = protocol.decode_v2(
            body,
            int(header) if header and header.isdigit() else None,
            model.inputs or None,
        )
        result = await _predict(model, model.rows(decoded.inputs))
        outputs = _output_tensors(model, result)
        if decoded.outputs_wanted:
            missing = [name for name in decoded.outputs_wanted if name not in outputs]
            if missing:
                raise tensors.ProtocolError(
                    f"model {model.name!r} has no output(s) {missing}; it has {sorted(outputs)}",
                    code="request/unknown_output",
                )
            outputs = {name: outputs[name] for name in decoded.outputs_wanted}
        _log_payload(request, model, decoded.inputs, outputs, started)
        payload, header_length = protocol.encode_v2(
            model.name, model.version, decoded.id, outputs, decoded.binary_outputs
        )
        if header_length is None:
            return Response(payload, media_type=JSON)
        return Response(
            payload,
            media_type=BINARY,
            headers={"Inference-Header-Content-Length": str(header_length)},
        )

    return await server.answer(model, work)


async def invocations(request: Request) -> Response:
    server = _server(request)
    name = request.query_params.get("model")
    if name is None and len(server.models) == 1:
        name = next(iter(server.models))
    if name is None:
        raise tensors.ProtocolError(
            f"several models are served here: say which with ?model= ({sorted(server.models)})",
            code="request/which_model",
        )
    model = server.model(name)

    async def work() -> Response:
        started = time.perf_counter()
        body = await _body(request, server)
        decoded = mlflow_format.decode_invocations(body, request.headers.get("content-type", JSON))
        rows = _invocation_rows(model, decoded.data)
        result = await _predict(model, rows)
        _log_payload(request, model, decoded.data, result, started)
        return Response(
            mlflow_format.encode_predictions(result, unwrapped=decoded.unwrapped), media_type=JSON
        )

    return await server.answer(model, work)


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
    model = _model(request)

    async def work() -> Response:
        started = time.perf_counter()
        body = await _body(request, server)
        decoded = protocol.decode_instances(body, model.inputs or None)
        rows = model.rows(decoded) if isinstance(decoded, dict) else decoded
        result = await _predict(model, rows)
        _log_payload(request, model, decoded, result, started)
        return Response(mlflow_format.encode_predictions(result), media_type=JSON)

    return await server.answer(model, work)


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
    """The ASGI app answering for ``server``'s models."""
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
        Route("/v1/models/{name}:predict", _shaped(predict_v1), methods=["POST"]),
        Route("/invocations", _shaped(invocations), methods=["POST"]),
        Route("/ping", ping),
        Route("/health", ping),
        Route("/version", version),
        Route("/metrics", metrics),
    ]
    app = Starlette(routes=routes)
    app.state.server = server
    return app
