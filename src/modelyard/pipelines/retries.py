"""What a failed attempt means: how it is recorded, whether it is tried again, and when."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from modelyard.runtimes.jobs import Outcome, OutcomeKind
from modelyard.specs.pipelines import RetryPolicy
from modelyard.specs.runs import AttemptState

ATTEMPT_STATE = {
    OutcomeKind.SUCCEEDED: AttemptState.SUCCEEDED,
    OutcomeKind.RAISED: AttemptState.FAILED,
    OutcomeKind.CRASHED: AttemptState.CRASHED,
    OutcomeKind.TIMED_OUT: AttemptState.TIMED_OUT,
    OutcomeKind.CANCELLED: AttemptState.CANCELLED,
}

# Crashes another attempt cannot mend, reported with one of these error types and no exit
# code: the Kubernetes runtime's image that cannot be pulled and container that cannot be
# configured (a missing Secret or key). No retry policy retries them.
UNRETRYABLE_CRASHES = frozenset({"kubernetes.ImagePull", "kubernetes.ConfigError"})


def error_record(outcome: Outcome) -> dict[str, Any]:
    return {
        "kind": outcome.kind.value,
        # The task's own exception is the user's failure; a dead or stopped process is
        # reported as the platform saw it.
        "source": "user" if outcome.kind is OutcomeKind.RAISED else "process",
        "type": outcome.error_type,
        "message": outcome.error_message,
        "traceback": outcome.traceback,
        "exit_code": outcome.exit_code,
    }


def retryable(policy: RetryPolicy, outcome: Outcome) -> bool:
    """Whether the policy allows another attempt after this outcome."""
    if outcome.kind is OutcomeKind.RAISED:
        if not policy.on_exceptions:
            return True
        raised = outcome.error_type or ""
        short = raised.rpartition(".")[2]
        return any(name in (raised, short) for name in policy.on_exceptions)
    if outcome.kind is OutcomeKind.CRASHED:
        if outcome.error_type in UNRETRYABLE_CRASHES:
            return False
        return not policy.on_exit_codes or outcome.exit_code in policy.on_exit_codes
    if outcome.kind is OutcomeKind.TIMED_OUT:
        return not policy.on_exceptions or "TimeoutError" in policy.on_exceptions
    return False


def backoff(policy: RetryPolicy, attempt: int) -> timedelta:
    """Exponential backoff with full jitter (attempt counts from 1)."""
    ceiling = min(
        policy.max_delay.total_seconds(),
        policy.delay.total_seconds() * policy.factor ** (attempt - 1),
    )
    return timedelta(seconds=random.uniform(0, ceiling))  # noqa: S311  (jitter, not secrecy)
