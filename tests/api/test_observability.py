"""Health, readiness, Prometheus metrics, request ids, JSON logs and OpenTelemetry export."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from modelyard.api import create_app
from modelyard.config import Settings
from modelyard.store import migrate
from tests.conftest import JsonLogs, LiveServer, Platform

pytestmark = pytest.mark.integration


def test_healthz_and_readyz(platform: Platform) -> None:
    with platform.client() as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        ready = anonymous.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"store": "ok", "schema": "ok"}}


def test_readyz_fails_when_the_schema_is_behind(platform: Platform) -> None:
    migrate.downgrade(platform.engine, "base")
    with platform.client() as anonymous:
        response = anonymous.get("/readyz")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "server/not_ready"
    assert response.json()["error"]["details"]["schema"].startswith("outdated")


def test_readyz_fails_when_the_store_is_unreachable(settings: Settings) -> None:
    broken = settings.model_copy(
        update={"database_url": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
    )
    server = LiveServer(create_app(broken))
    server.start()
    try:
        response = httpx.get(f"{server.url}/readyz", timeout=20)
    finally:
        server.stop()
    assert response.status_code == 503
    assert response.json()["error"]["details"]["store"].startswith("unreachable")


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_metrics_count_requests_by_route_template(platform: Platform) -> None:
    with platform.admin() as admin:
        for name in ("a1", "a2", "a3"):
            admin.post("/api/v1/projects", json={"name": name})
            admin.get(f"/api/v1/projects/{name}")
        admin.get("/api/v1/projects/missing")
        text = admin.get("/metrics").text
    counts = _samples(text, "modelyard_http_requests_total")
    route = "/api/v1/projects/{project}"
    assert counts[(("code", "200"), ("method", "GET"), ("route", route))] == 3
    assert counts[(("code", "404"), ("method", "GET"), ("route", route))] == 1
    assert counts[(("code", "201"), ("method", "POST"), ("route", "/api/v1/projects"))] == 3
    assert not any("a1" in dict(labels)["route"] for labels in counts)
    durations = _samples(text, "modelyard_http_request_duration_seconds_count")
    assert durations[(("method", "GET"), ("route", route))] == 4


def test_every_response_carries_a_request_id(platform: Platform) -> None:
    with platform.client() as anonymous:
        generated = anonymous.get("/healthz").headers["x-request-id"]
        echoed = anonymous.get("/healthz", headers={"X-Request-ID": "abc-123"})
        unsafe = anonymous.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
        failed = anonymous.get("/api/v1/projects")
    assert len(generated) == 32
    assert echoed.headers["x-request-id"] == "abc-123"
    assert unsafe.headers["x-request-id"] != "bad id\twith spaces"
    assert failed.status_code == 401
    assert failed.headers["x-request-id"]


def test_access_logs_are_json_with_request_and_trace_ids(
    platform: Platform, json_logs: JsonLogs
) -> None:
    with platform.admin() as admin:
        admin.get("/api/v1/projects", headers={"X-Request-ID": "req-42"})
    lines = [r for r in json_logs.records() if r.get("request_id") == "req-42"]
    assert len(lines) == 1
    line = lines[0]
    assert line["name"] == "modelyard.access"
    assert line["route"] == "/api/v1/projects"
    assert line["status"] == 200
    assert len(line["trace_id"]) == 32
    assert line["level"] == "INFO"
    assert "time" in line


def test_an_unhandled_error_is_a_500_in_the_error_shape(
    settings: Settings, engine: Engine, json_logs: JsonLogs
) -> None:
    app = create_app(settings, engine=engine)

    def explode() -> None:
        raise RuntimeError("kaboom")

    app.add_api_route("/boom", explode)
    server = LiveServer(app)
    server.start()
    try:
        response = httpx.get(f"{server.url}/boom", headers={"X-Request-ID": "r-500"})
        still_up = httpx.get(f"{server.url}/healthz")
    finally:
        server.stop()
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal/error"
    assert response.json()["error"]["details"] == {"request_id": "r-500"}
    assert "kaboom" not in response.text
    assert still_up.status_code == 200
    errors = [r for r in json_logs.records() if r["level"] == "ERROR"]
    assert errors
    assert errors[0]["request_id"] == "r-500"
    assert "kaboom" in errors[0]["exc_info"]


class _Collector:
    """A real OTLP/HTTP receiver: decodes what the exporter posts to /v1/traces."""

    def __init__(self) -> None:
        self.spans: list[str] = []
        self.trace_ids: set[str] = set()
        self.received = threading.Event()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource_spans in request.resource_spans:
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            collector.spans.append(span.name)
                            collector.trace_ids.add(span.trace_id.hex())
                self.send_response(200)
                self.end_headers()
                collector.received.set()

            def log_message(self, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def collector() -> Iterator[_Collector]:
    receiver = _Collector()
    yield receiver
    receiver.httpd.shutdown()
    receiver.httpd.server_close()


def test_spans_are_exported_when_an_otlp_endpoint_is_set(
    settings: Settings, engine: Engine, collector: _Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    server = LiveServer(create_app(settings, engine=engine))
    server.start()
    try:
        response = httpx.get(f"{server.url}/api/v1/projects")
    finally:
        server.stop()  # shutting down flushes the batch processor
    assert response.status_code == 401
    assert collector.received.wait(10)
    assert "GET /api/v1/projects" in collector.spans


def test_nothing_is_exported_without_an_endpoint(
    settings: Settings, engine: Engine, collector: _Collector
) -> None:
    server = LiveServer(create_app(settings, engine=engine))
    server.start()
    try:
        httpx.get(f"{server.url}/api/v1/projects")
    finally:
        server.stop()
    assert not collector.received.wait(1)
