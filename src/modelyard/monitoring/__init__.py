"""Telemetry: metric names, JSON logging with request and trace ids, OpenTelemetry tracing."""
