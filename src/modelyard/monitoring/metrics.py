"""Prometheus metrics of the control-plane API, on a registry owned by each app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

HTTP_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HttpMetrics:
    """Request count, latency and in-flight requests, labelled by route template.

    Labels use the route template (``/api/v1/projects/{project}``), never the raw path,
    so the label set stays bounded.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "modelyard_http_requests_total",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "modelyard_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=HTTP_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inflight = Gauge(
            "modelyard_http_inflight_requests",
            "HTTP requests being answered now.",
            registry=self.registry,
        )

    def observe(self, method: str, route: str, code: int, seconds: float) -> None:
        self.requests.labels(method, route, str(code)).inc()
        self.duration.labels(method, route).observe(seconds)


TASK_DURATION_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0)


class PipelineMetrics:
    """Task runs by outcome, their duration, and the queue depth of each pool (DESIGN)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.task_runs = Counter(
            "modelyard_task_runs_total",
            "Task runs that reached a final state, by pipeline, task and state.",
            ["pipeline", "task", "state"],
            registry=self.registry,
        )
        self.task_duration = Histogram(
            "modelyard_task_duration_seconds",
            "Time an attempt of a task took in its worker, by pipeline and task.",
            ["pipeline", "task"],
            buckets=TASK_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "modelyard_queue_depth",
            "Task runs ready to run and waiting for a slot, by pool ('default': no pool).",
            ["pool"],
            registry=self.registry,
        )


SERVING_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServingMetrics:
    """Model-server requests, latency, in-flight requests and batch sizes (DESIGN), and
    the model repository's loads, unloads and memory."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "modelyard_requests_total",
            "Inference requests answered, by deployment, model, version and status code.",
            ["deployment", "model", "version", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "modelyard_request_duration_seconds",
            "Time to answer an inference request, by deployment, model and version.",
            ["deployment", "model", "version"],
            buckets=SERVING_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inflight = Gauge(
            "modelyard_inflight_requests",
            "Inference requests being answered now, by deployment and model.",
            ["deployment", "model"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "modelyard_batch_size",
            "Rows predicted in one call of a model's predict, by model.",
            ["model"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.model_memory = Gauge(
            "modelyard_model_memory_bytes",
            "Memory a loaded model is estimated to take (0 while not loaded), by model.",
            ["model"],
            registry=self.registry,
        )
        self.memory_budget = Gauge(
            "modelyard_model_memory_budget_bytes",
            "The memory budget of the loaded models (absent: no budget).",
            registry=self.registry,
        )
        self.model_loads = Counter(
            "modelyard_model_loads_total",
            "Model loads by model and outcome (loaded, failed, refused: no room).",
            ["model", "outcome"],
            registry=self.registry,
        )
        self.model_unloads = Counter(
            "modelyard_model_unloads_total",
            "Model unloads by model and reason (unloaded on request, evicted for room).",
            ["model", "reason"],
            registry=self.registry,
        )
