"""OpenTelemetry tracing: always instrumented, recorded and exported when an exporter is
configured; without one, spans still carry trace ids (so logs do) but are not recorded."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from modelyard._version import __version__


def create_tracer_provider(
    service_name: str, *, exporter: SpanExporter | None = None
) -> TracerProvider:
    """A provider for one app; it exports over OTLP/HTTP when
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set,
    and to ``exporter``, span by span, when one is given (a console, a test's memory).

    With neither, spans are created but not recorded (unless ``OTEL_TRACES_SAMPLER``
    says otherwise): each still has a trace id, the caller's when a ``traceparent``
    came in, so logs and payload rows carry it, and a request pays next to nothing for
    spans no one would see.
    """
    resource = Resource.create({"service.name": service_name, "service.version": __version__})
    otlp = bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    recorded = otlp or exporter is not None or bool(os.environ.get("OTEL_TRACES_SAMPLER"))
    # sampler=None: the SDK's default (parent-based, always on) or OTEL_TRACES_SAMPLER.
    provider = TracerProvider(resource=resource, sampler=None if recorded else ALWAYS_OFF)
    if otlp:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def incoming_context(headers: Mapping[str, str]) -> Context:
    """The caller's trace context from a request's headers (W3C ``traceparent``, or
    what ``OTEL_PROPAGATORS`` names)."""
    return propagate.extract(headers)


def record_span(
    tracer: trace.Tracer,
    parent: trace.Span,
    name: str,
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """A finished child span of ``parent`` from two ``time.time_ns()`` readings: cheaper
    than entering a span around the work (no context switches), and possible for work
    done elsewhere (a batch predicted in a thread). Nothing when ``parent`` is not
    recorded."""
    if not parent.is_recording():
        return
    span = tracer.start_span(
        name,
        context=trace.set_span_in_context(parent),
        start_time=start_ns,
        attributes=attributes,
    )
    span.end(end_time=end_ns)


def trace_id(span: trace.Span) -> str | None:
    """A span's trace id as W3C writes it (32 hex digits), ``None`` when it has none."""
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
