"""Replica counts from in-flight requests, by the Kubernetes HPA's rules.

The recommendation is ``ceil(in-flight / target)``: the HPA's ``ceil(current * metric /
target)`` with the metric averaged per replica (a tolerance of 10% keeps the count
when the ratio is close to 1). It is then stabilised as ``behavior`` does it: a scale-up
takes the lowest recommendation of its window and a scale-down the highest of its own,
so a spike of one sample adds nothing when the up-window is set and a lull of a few
seconds removes nothing. With ``min_replicas`` 0 an idle variant goes to zero after
``idle_before_zero`` and comes back at the first waiting request.

The Kubernetes backend renders the same settings as an ``autoscaling/v2`` HPA on the
``modelyard_inflight_requests`` Pods metric with the same windows.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from modelyard.specs.deployments import Scaling

TOLERANCE = 0.1


@dataclass(frozen=True)
class Load:
    """What the router saw of one variant since the previous decision.

    Args:
        inflight: Requests in flight on average over the interval.
        pending: Requests waiting now because the variant has no ready replica.
        requests: Requests answered over the interval.
    """

    inflight: float
    pending: int = 0
    requests: int = 0


@dataclass
class Autoscaler:
    """Decides one variant's replica count; keeps the recommendations of its windows."""

    scaling: Scaling
    _history: deque[tuple[float, int]] = field(default_factory=deque)
    _last_busy: float | None = None

    def decide(self, now: float, current: int, load: Load) -> int:
        """The replica count to run from ``now`` (seconds on a monotonic clock)."""
        s = self.scaling
        if load.requests or load.pending or load.inflight > 0 or self._last_busy is None:
            self._last_busy = now
        raw = self._recommend(current, load)
        self._history.append((now, raw))
        horizon = max(s.scale_up_window, s.scale_down_window).total_seconds()
        while self._history and self._history[0][0] < now - horizon:
            self._history.popleft()
        up_window = [r for t, r in self._history if t >= now - s.scale_up_window.total_seconds()]
        down_window = [
            r for t, r in self._history if t >= now - s.scale_down_window.total_seconds()
        ]
        desired = current
        if raw > current:
            desired = max(current, min(up_window))
        elif raw < current:
            desired = min(current, max(down_window))
        floor = s.min_replicas
        if floor == 0 and now - self._last_busy < s.idle_before_zero.total_seconds():
            floor = 1  # busy lately: keep one until the idle period has passed
        if load.pending and desired == 0:
            desired = 1
        return max(floor, min(s.max_replicas, desired))

    def _recommend(self, current: int, load: Load) -> int:
        if current == 0:
            return math.ceil(load.pending / self.scaling.target_inflight) if load.pending else 0
        ratio = load.inflight / (current * self.scaling.target_inflight)
        if abs(ratio - 1) <= TOLERANCE:
            return current
        return math.ceil(load.inflight / self.scaling.target_inflight)


def hpa_spec(scaling: Scaling, target: str) -> dict[str, object]:
    """The same rule as an ``autoscaling/v2`` HorizontalPodAutoscaler ``spec`` for the
    Deployment named ``target``: the Pods metric ``modelyard_inflight_requests`` (served
    by the Prometheus Adapter), averaged per pod, and the same stabilisation windows.
    The HPA cannot go to zero: a ``min_replicas`` of 0 becomes 1 there (scale to zero on
    Kubernetes needs KEDA or Knative)."""
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
        "minReplicas": max(1, scaling.min_replicas),
        "maxReplicas": scaling.max_replicas,
        "metrics": [
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "modelyard_inflight_requests"},
                    "target": {
                        "type": "AverageValue",
                        "averageValue": _quantity(scaling.target_inflight),
                    },
                },
            }
        ],
        "behavior": {
            "scaleUp": {"stabilizationWindowSeconds": int(scaling.scale_up_window.total_seconds())},
            "scaleDown": {
                "stabilizationWindowSeconds": int(scaling.scale_down_window.total_seconds())
            },
        },
    }


def _quantity(value: float) -> str:
    """A Kubernetes quantity: whole numbers as they are, fractions in thousandths."""
    return str(int(value)) if value == int(value) else f"{round(value * 1000)}m"
