"""Canary analysis: advance, hold or roll back, from what the router measured of the
canary and its baseline over the current step."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from modelyard.specs.deployments import RolloutPolicy


@dataclass(frozen=True)
class VariantStats:
    """One variant's answers over a span of time, as the router reports them."""

    requests: int = 0
    errors: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> VariantStats:
        if not data:
            return cls()
        return cls(
            requests=int(data.get("requests", 0)),
            errors=int(data.get("errors", 0)),
            p50_ms=float(data.get("p50_ms", 0.0)),
            p99_ms=float(data.get("p99_ms", 0.0)),
        )


class Action(StrEnum):
    HOLD = "hold"
    ADVANCE = "advance"
    ROLL_BACK = "roll_back"


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str


def judge(
    policy: RolloutPolicy,
    baseline: VariantStats,
    canary: VariantStats,
    elapsed_seconds: float,
) -> Verdict:
    """What to do with a canary that has been at its step for ``elapsed_seconds``.

    A breach rolls back as soon as the canary has ``min_requests``: waiting out the
    window would only send more users to a broken model. Otherwise the step holds until
    its window has passed with enough requests.
    """
    if canary.requests >= policy.min_requests:
        allowed = baseline.error_rate + policy.max_error_rate_increase
        if canary.error_rate > allowed:
            return Verdict(
                Action.ROLL_BACK,
                f"canary error rate {canary.error_rate:.1%} over {canary.requests} requests "
                f"is above the baseline's {baseline.error_rate:.1%} + "
                f"{policy.max_error_rate_increase:.1%}",
            )
        if baseline.requests:
            limit = baseline.p99_ms * policy.max_p99_ratio + policy.p99_slack_ms
            if canary.p99_ms > limit:
                return Verdict(
                    Action.ROLL_BACK,
                    f"canary p99 {canary.p99_ms:.1f} ms is above {limit:.1f} ms (baseline "
                    f"p99 {baseline.p99_ms:.1f} ms x {policy.max_p99_ratio:g} + "
                    f"{policy.p99_slack_ms:g} ms)",
                )
    if elapsed_seconds < policy.window.total_seconds():
        return Verdict(Action.HOLD, "the step's window has not passed")
    if canary.requests < policy.min_requests:
        return Verdict(
            Action.HOLD,
            f"waiting for traffic: {canary.requests} of {policy.min_requests} requests",
        )
    return Verdict(
        Action.ADVANCE,
        f"healthy over {canary.requests} requests: error rate {canary.error_rate:.1%}, "
        f"p99 {canary.p99_ms:.1f} ms",
    )
