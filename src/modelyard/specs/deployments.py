"""Deployments: which model versions serve a project's endpoint, how traffic is split
between them, how many replicas run, and how a new version is rolled out."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from modelyard.specs.common import Spec
from modelyard.specs.resources import Resources

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$"
VARIANT_HEADER = "x-modelyard-variant"
"""A request carrying this header with a variant's name is sent to that variant (how a
blue-green candidate is tried before the switch); every answer names its variant in it."""


class Variant(Spec):
    """One model version behind the endpoint.

    Args:
        name: The variant's name in traffic rules (``primary``, ``canary``, ``shadow``...).
        model: ``models:/name@alias``, ``models:/name/3``, ``runs:/...`` or a model folder.
            An alias is resolved when the revision is made, so a revision always names a
            fixed version and moving the alias later changes nothing that runs.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,30}$")
    model: str = Field(min_length=1, max_length=1024)


class HeaderMatch(Spec):
    """Send requests whose ``header`` equals ``value`` to ``variant`` (A/B by header)."""

    header: str = Field(pattern=r"^[A-Za-z0-9-]{1,64}$")
    value: str = Field(max_length=256)
    variant: str


class Traffic(Spec):
    """How requests are spread over the variants.

    Args:
        weights: Percent of requests per variant; they add up to 100. A variant may get 0
            (reachable by header only, as a blue-green candidate is).
        shadow: A variant that receives a copy of ``shadow_percent`` of the requests; its
            answers are compared with the primary's and logged, never returned.
        matches: Header rules, tried in order before the weights.
        sticky_header: A request header whose value pins a caller to one variant (the
            same value always lands on the same variant while the weights hold).
    """

    weights: dict[str, int]
    shadow: str | None = None
    shadow_percent: int = Field(default=100, ge=1, le=100)
    matches: tuple[HeaderMatch, ...] = ()
    sticky_header: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]{1,64}$")

    @property
    def primary(self) -> str:
        """The variant with the most traffic (the first of equals)."""
        return max(self.weights, key=lambda name: self.weights[name])

    @field_validator("weights")
    @classmethod
    def _percentages(cls, weights: dict[str, int]) -> dict[str, int]:
        if not weights:
            raise ValueError("at least one variant must receive traffic")
        if any(w < 0 or w > 100 for w in weights.values()):
            raise ValueError("each weight is a percentage between 0 and 100")
        if sum(weights.values()) != 100:
            raise ValueError(f"weights add up to {sum(weights.values())}, not 100")
        return weights


class Scaling(Spec):
    """Replicas per variant, scaled on in-flight requests per replica (the metric an HPA
    reads as ``modelyard_inflight_requests``).

    Args:
        min_replicas: Fewest replicas; 0 lets an idle variant scale to zero (the router
            holds the first request while a replica starts).
        max_replicas: Most replicas.
        target_inflight: In-flight requests per replica the autoscaler aims at.
        scale_up_window: Stabilisation before scaling up (the highest recommendation of
            the window wins, as with the HPA's ``behavior.scaleUp``).
        scale_down_window: Stabilisation before scaling down (the highest recommendation
            of the window wins, so a short lull removes nothing).
        idle_before_zero: With ``min_replicas`` 0, how long a variant sees no request
            before its last replica stops.
    """

    min_replicas: int = Field(default=1, ge=0, le=64)
    max_replicas: int = Field(default=1, ge=1, le=64)
    target_inflight: float = Field(default=8.0, gt=0)
    scale_up_window: timedelta = timedelta(seconds=0)
    scale_down_window: timedelta = timedelta(seconds=60)
    idle_before_zero: timedelta = timedelta(seconds=300)

    @model_validator(mode="after")
    def _bounds(self) -> Scaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})"
            )
        return self


class BatchingSettings(Spec):
    """The model server's adaptive batching (see ``modelyard serve``)."""

    max_batch_size: int = Field(default=64, ge=1, le=4096)
    max_latency_ms: float = Field(default=0.0, ge=0, le=10_000)


class RolloutPolicy(Spec):
    """How a canary advances and when it is rolled back.

    A step holds for ``window``; the canary advances when, over the step, it has served
    at least ``min_requests`` and its error rate and p99 latency stayed within the
    thresholds of the baseline's over the same time. It is rolled back as soon as it has
    ``min_requests`` and breaks a threshold, or when its replicas cannot start.

    Args:
        steps: Percent of traffic at each step; the last is 100.
        window: How long each step lasts at least.
        min_requests: Requests the canary must serve in a step before it is judged.
        max_error_rate_increase: Error rate above the baseline's that is tolerated
            (0.01: one point).
        max_p99_ratio: The canary's p99 may be this multiple of the baseline's...
        p99_slack_ms: ...plus this (so that a fast baseline's noise does not fail it).
    """

    steps: tuple[int, ...] = (10, 50, 100)
    window: timedelta = timedelta(seconds=60)
    min_requests: int = Field(default=100, ge=1)
    max_error_rate_increase: float = Field(default=0.01, ge=0, le=1)
    max_p99_ratio: float = Field(default=1.5, ge=1)
    p99_slack_ms: float = Field(default=20.0, ge=0)

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: tuple[int, ...]) -> tuple[int, ...]:
        if not steps or steps[-1] != 100:
            raise ValueError("the last step sends 100% of the traffic")
        if any(s <= 0 or s > 100 for s in steps) or list(steps) != sorted(set(steps)):
            raise ValueError("steps are increasing percentages between 1 and 100")
        return steps


class DeploymentSpec(Spec):
    """An endpoint: its variants, traffic, replicas, resources and rollout policy.

    Args:
        name: The deployment's name; clients call ``/v2/models/<name>/infer``.
        variants: The model versions behind it (at most four).
        traffic: The split between them; default: all to the first.
        scaling: Replicas per variant.
        resources: What each replica needs.
        batching: The replicas' adaptive batching.
        rollout: How canaries advance.
        log_payloads: The fraction of requests each replica logs (0 to 1).
    """

    name: str = Field(pattern=NAME_PATTERN)
    variants: tuple[Variant, ...] = Field(min_length=1, max_length=4)
    traffic: Traffic | None = None
    scaling: Scaling = Scaling()
    resources: Resources = Resources()
    batching: BatchingSettings = BatchingSettings()
    rollout: RolloutPolicy = RolloutPolicy()
    log_payloads: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _consistent(self) -> DeploymentSpec:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names repeat: {names}")
        if self.traffic is None:
            self.traffic = Traffic(weights={names[0]: 100})
        known = set(names)
        referenced = set(self.traffic.weights) | {m.variant for m in self.traffic.matches}
        if self.traffic.shadow is not None:
            referenced.add(self.traffic.shadow)
        unknown = sorted(referenced - known)
        if unknown:
            raise ValueError(f"traffic names unknown variant(s) {unknown}; variants: {names}")
        if self.traffic.shadow is not None and self.traffic.weights.get(self.traffic.shadow):
            raise ValueError(f"shadow variant {self.traffic.shadow!r} must get no live traffic")
        unused = sorted(known - referenced)
        if unused:
            raise ValueError(f"variant(s) {unused} receive no traffic; give them a weight")
        return self

    @property
    def routed(self) -> Traffic:
        assert self.traffic is not None  # filled in by the validator
        return self.traffic

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def server_args(self, model: str, host: str, port: int) -> list[str]:
        """The ``modelyard serve`` arguments of a replica serving ``model``, here or in
        a pod."""
        return [
            "serve",
            model,
            "--host",
            host,
            "--port",
            str(port),
            "--max-batch-size",
            str(self.batching.max_batch_size),
            "--max-latency-ms",
            str(self.batching.max_latency_ms),
            "--log-payloads",
            str(self.log_payloads),
        ]

    def config_key(self, model: str) -> str:
        """What a replica's process depends on: a change means new replicas."""
        data = json.dumps(
            [model, self.batching.model_dump(), self.resources.model_dump(), self.log_payloads],
            sort_keys=True,
        )
        return hashlib.sha256(data.encode()).hexdigest()[:16]


class RolloutState(Spec):
    """A canary in progress, kept on the deployment."""

    candidate: str
    baseline: str
    strategy: Literal["canary", "blue-green"] = "canary"
    paused: bool = False  # weights set by hand: no automatic step until promote/rollback
    step: int
    step_started_at: datetime
    revision: int  # the revision that started the rollout


class DeploymentOut(Spec):
    id: str
    name: str
    state: str
    reason: str
    revision: int
    endpoint: str | None
    spec: DeploymentSpec
    rollout: RolloutState | None
    replicas: dict[str, int]  # desired per variant
    created_by: str | None
    created_at: datetime
    updated_at: datetime


class RevisionOut(Spec):
    number: int
    change: str
    status: str
    reason: str
    spec: DeploymentSpec
    created_by: str | None
    created_at: datetime


class ReplicaOut(Spec):
    id: str
    variant: str
    model: str
    state: str
    url: str
    pid: int | None
    reason: str
    started_at: datetime


class DeploymentDetail(DeploymentOut):
    revisions: list[RevisionOut]
    replica_processes: list[ReplicaOut]
    live: dict[str, Any] = Field(default_factory=dict)  # the router's recent statistics


Strategy = Literal["canary", "blue-green", "replace"]


class DeploymentUpdate(Spec):
    """Roll a new model version out, or change settings (a new revision either way).

    Args:
        model: The new version. With ``canary`` it joins as ``canary`` and advances by
            the rollout policy; with ``blue-green`` it starts at 0% (reachable with the
            variant header) until ``promote`` switches everything at once; ``replace``
            swaps the primary's model (new replicas start before the old ones stop).
        shadow: A version to mirror traffic to (``shadow_percent`` of it); ``""`` stops
            mirroring.
    """

    model: str | None = Field(default=None, min_length=1, max_length=1024)
    strategy: Strategy = "canary"
    shadow: str | None = Field(default=None, max_length=1024)
    shadow_percent: int | None = Field(default=None, ge=1, le=100)
    scaling: Scaling | None = None
    batching: BatchingSettings | None = None
    rollout: RolloutPolicy | None = None
    log_payloads: float | None = Field(default=None, ge=0, le=1)


class TrafficChange(Spec):
    """Set the weights by hand (stops an automatic rollout where it is)."""

    weights: dict[str, int]


class RollbackRequest(Spec):
    """Abort the rollout in progress, or go back to ``revision`` (default: the one
    before the current)."""

    revision: int | None = Field(default=None, ge=1)
    reason: str = Field(default="", max_length=2000)
