"""What the platform gives Prometheus, Grafana and the Prometheus Adapter: alerting rules,
a dashboard and the adapter rule behind the model servers' HPA, all on the DESIGN metric
names. They do not depend on the platform's values, so the Helm chart ships the same
text as files (``scripts/helm_values.py`` writes them) and the renderer embeds it.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

INFLIGHT_METRIC = "modelyard_inflight_requests"

# Alert thresholds: chosen for online inference behind an SLO of 99.9% non-5xx answers
# and a one-second p99; teams with other SLOs copy the rules and change the numbers.
ERROR_RATIO = 0.05
MIN_REQUESTS_PER_SECOND = 0.1
P99_SECONDS = 1.0
QUEUE_DEPTH = 50

_BY_DEPLOYMENT = "namespace, deployment"


def prometheus_rules() -> dict[str, Any]:
    """The ``spec`` of the PrometheusRule: serving, pipeline and control-plane alerts."""
    requests = f"sum by ({_BY_DEPLOYMENT}) (rate(modelyard_requests_total[5m]))"
    errors = f'sum by ({_BY_DEPLOYMENT}) (rate(modelyard_requests_total{{code=~"5.."}}[5m]))'
    p99 = (
        f"histogram_quantile(0.99, sum by ({_BY_DEPLOYMENT}, le) "
        "(rate(modelyard_request_duration_seconds_bucket[5m])))"
    )
    api_requests = "sum by (namespace) (rate(modelyard_http_requests_total[5m]))"
    api_errors = 'sum by (namespace) (rate(modelyard_http_requests_total{code=~"5.."}[5m]))'
    return {
        "groups": [
            {
                "name": "modelyard.serving",
                "rules": [
                    _alert(
                        "ModelyardDeploymentErrorRatioHigh",
                        f"({errors} / {requests}) > {ERROR_RATIO} "
                        f"and {requests} > {MIN_REQUESTS_PER_SECOND}",
                        "5m",
                        "critical",
                        "Deployment {{ $labels.deployment }} answers too many 5xx",
                        "{{ $value | humanizePercentage }} of the requests to deployment "
                        "{{ $labels.deployment }} in {{ $labels.namespace }} failed with "
                        "a 5xx over the last 5 minutes.",
                    ),
                    _alert(
                        "ModelyardDeploymentLatencyHigh",
                        f"{p99} > {P99_SECONDS}",
                        "10m",
                        "warning",
                        "Deployment {{ $labels.deployment }} is slow",
                        "The p99 latency of deployment {{ $labels.deployment }} in "
                        "{{ $labels.namespace }} is {{ $value | humanizeDuration }}.",
                    ),
                ],
            },
            {
                "name": "modelyard.pipelines",
                "rules": [
                    _alert(
                        "ModelyardTaskRunsFailing",
                        "sum by (namespace, pipeline, task) "
                        '(increase(modelyard_task_runs_total{state="failed"}[15m])) > 0',
                        "0m",
                        "warning",
                        "Task {{ $labels.pipeline }}.{{ $labels.task }} failed",
                        "{{ $value | humanize }} runs of task {{ $labels.task }} of "
                        "pipeline {{ $labels.pipeline }} failed in the last 15 minutes.",
                    ),
                    _alert(
                        "ModelyardQueueBacklog",
                        f"max by (namespace, pool) (modelyard_queue_depth) > {QUEUE_DEPTH}",
                        "15m",
                        "warning",
                        "Pool {{ $labels.pool }} has a backlog",
                        "{{ $value | humanize }} task runs have waited in pool "
                        "{{ $labels.pool }} for a slot for 15 minutes.",
                    ),
                ],
            },
            {
                "name": "modelyard.control-plane",
                "rules": [
                    _alert(
                        "ModelyardApiErrorRatioHigh",
                        f"({api_errors} / {api_requests}) > {ERROR_RATIO} "
                        f"and {api_requests} > {MIN_REQUESTS_PER_SECOND}",
                        "5m",
                        "critical",
                        "The modelyard API answers too many 5xx",
                        "{{ $value | humanizePercentage }} of the API's requests in "
                        "{{ $labels.namespace }} failed with a 5xx.",
                    ),
                    _alert(
                        "ModelyardApiDown",
                        'up{job="modelyard-api"} == 0',
                        "5m",
                        "critical",
                        "A modelyard API replica cannot be scraped",
                        "{{ $labels.pod }} in {{ $labels.namespace }} has not answered "
                        "Prometheus for 5 minutes.",
                    ),
                ],
            },
        ]
    }


def _alert(
    alert: str, expr: str, for_: str, severity: str, summary: str, description: str
) -> dict[str, Any]:
    return {
        "alert": alert,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity},
        "annotations": {"summary": summary, "description": description},
    }


def prometheus_rules_yaml() -> str:
    return yaml.safe_dump(prometheus_rules(), sort_keys=False, width=1000)


def adapter_rules() -> dict[str, Any]:
    """The Prometheus Adapter rule exposing ``modelyard_inflight_requests`` of each pod
    as a ``pods`` metric of the custom metrics API, the model servers' HPA target."""
    return {
        "rules": [
            {
                "seriesQuery": f'{INFLIGHT_METRIC}{{namespace!="",pod!=""}}',
                "resources": {
                    "overrides": {
                        "namespace": {"resource": "namespace"},
                        "pod": {"resource": "pod"},
                    }
                },
                "name": {"matches": f"^{INFLIGHT_METRIC}$", "as": INFLIGHT_METRIC},
                "metricsQuery": "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
            }
        ]
    }


def adapter_rules_yaml() -> str:
    return yaml.safe_dump(adapter_rules(), sort_keys=False, width=1000)


_DEPLOYMENT_FILTER = 'namespace=~"$namespace", deployment=~"$deployment"'


def _panel(
    panel_id: int,
    title: str,
    targets: list[tuple[str, str]],
    x: int,
    y: int,
    unit: str,
    description: str,
) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + index),
                "expr": expr,
                "legendFormat": legend,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
            }
            for index, (expr, legend) in enumerate(targets)
        ],
    }


def grafana_dashboard() -> dict[str, Any]:
    """A Grafana dashboard of serving and pipelines, filtered by namespace and
    deployment, on the DESIGN metric names."""
    f = _DEPLOYMENT_FILTER
    quantile = (
        "histogram_quantile(Q, sum by (deployment, le) "
        f"(rate(modelyard_request_duration_seconds_bucket{{{f}}}[$__rate_interval])))"
    )
    batch = (
        "histogram_quantile(Q, sum by (model, le) "
        '(rate(modelyard_batch_size_bucket{namespace=~"$namespace"}[$__rate_interval])))'
    )
    panels = [
        _panel(
            1,
            "Request rate",
            [
                (
                    f"sum by (deployment, code) (rate(modelyard_requests_total{{{f}}}"
                    "[$__rate_interval]))",
                    "{{deployment}} {{code}}",
                )
            ],
            0,
            0,
            "reqps",
            "Inference requests answered per second, by deployment and status code.",
        ),
        _panel(
            2,
            "Error ratio (5xx)",
            [
                (
                    f'sum by (deployment) (rate(modelyard_requests_total{{{f}, code=~"5.."}}'
                    "[$__rate_interval])) / sum by (deployment) "
                    f"(rate(modelyard_requests_total{{{f}}}[$__rate_interval]))",
                    "{{deployment}}",
                )
            ],
            12,
            0,
            "percentunit",
            "The share of requests answered with a 5xx.",
        ),
        _panel(
            3,
            "Latency p50 / p99",
            [
                (quantile.replace("Q", "0.5", 1), "p50 {{deployment}}"),
                (quantile.replace("Q", "0.99", 1), "p99 {{deployment}}"),
            ],
            0,
            8,
            "s",
            "Request latency quantiles, by deployment.",
        ),
        _panel(
            4,
            "In-flight requests",
            [(f"sum by (deployment) ({INFLIGHT_METRIC}{{{f}}})", "{{deployment}}")],
            12,
            8,
            "short",
            "Requests being answered now: what the HPA scales on.",
        ),
        _panel(
            5,
            "Batch size p50 / p99",
            [
                (batch.replace("Q", "0.5", 1), "p50 {{model}}"),
                (batch.replace("Q", "0.99", 1), "p99 {{model}}"),
            ],
            0,
            16,
            "short",
            "Requests the model servers' adaptive batching put together, by model.",
        ),
        _panel(
            6,
            "Task runs by state",
            [
                (
                    "sum by (state) (increase(modelyard_task_runs_total"
                    '{namespace=~"$namespace"}[$__rate_interval]))',
                    "{{state}}",
                )
            ],
            12,
            16,
            "short",
            "Task runs that reached a final state, by state.",
        ),
        _panel(
            7,
            "Queue depth",
            [('max by (pool) (modelyard_queue_depth{namespace=~"$namespace"})', "{{pool}}")],
            0,
            24,
            "short",
            "Task runs ready to run and waiting for a slot, by pool.",
        ),
        _panel(
            8,
            "Task duration p95",
            [
                (
                    "histogram_quantile(0.95, sum by (pipeline, task, le) "
                    "(rate(modelyard_task_duration_seconds_bucket"
                    '{namespace=~"$namespace"}[$__rate_interval])))',
                    "{{pipeline}}.{{task}}",
                )
            ],
            12,
            24,
            "s",
            "How long task attempts take in their workers.",
        ),
    ]
    return {
        "uid": "modelyard-overview",
        "title": "modelyard",
        "tags": ["modelyard"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "editable": True,
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                },
                _variable(
                    "namespace", "label_values(modelyard_requests_total, namespace)", "Namespace"
                ),
                _variable(
                    "deployment",
                    'label_values(modelyard_requests_total{namespace=~"$namespace"}, deployment)',
                    "Deployment",
                ),
            ]
        },
        "panels": panels,
    }


def _variable(variable: str, query: str, label: str) -> dict[str, Any]:
    return {
        "name": variable,
        "label": label,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": variable},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": "All", "value": "$__all"},
    }


def grafana_dashboard_json() -> str:
    return json.dumps(grafana_dashboard(), indent=2) + "\n"
