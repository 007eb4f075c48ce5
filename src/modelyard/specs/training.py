"""Training jobs: what to run, on how many workers, and what to do when one fails."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from modelyard.specs.common import Spec
from modelyard.specs.resources import Resources

# Exit codes a worker gets when it is killed by a signal (128 + signal number) or, as
# Python reports them, negative numbers: SIGKILL (an out-of-memory kill), SIGTERM
# (preemption, eviction) and SIGSEGV/SIGBUS (a device or driver fault).
SIGNAL_EXIT_CODES = (-9, -15, -11, -7, 137, 143, 139, 135)


class FailurePolicy(Spec):
    """When a failed gang is started again (from its latest checkpoint) and when the job
    fails at once, as Kubeflow's ``ExitCode`` restart policy decides it.

    A worker killed by a signal (out of memory, preempted, a device fault) is retried;
    a worker that exits with a code of its own (a bug in the user's code) fails the job,
    unless that code or the exception it raised is listed here.

    Args:
        backoff_limit: Restarts of the whole gang before the job fails.
        retry_on_exit_codes: Exit codes that are retried as well.
        retry_on_exceptions: Exception types (qualified names, e.g.
            ``"torch.distributed.DistBackendError"``) that are retried when a function
            entrypoint raises them.
        backoff: Wait before a restart.
    """

    backoff_limit: int = Field(default=3, ge=0, le=100)
    retry_on_exit_codes: tuple[int, ...] = ()
    retry_on_exceptions: tuple[str, ...] = ()
    backoff: timedelta = timedelta(seconds=1)


class TrainingJobSpec(Spec):
    """A training job: an entrypoint run by ``workers`` processes started together.

    Args:
        name: The job's name.
        entrypoint: A Python function, ``"module:function"`` (called with ``params`` as
            keyword arguments), or a script, ``"path/to/train.py"`` (run with ``args``).
        params: Keyword arguments of a function entrypoint (JSON values).
        args: Command-line arguments of a script entrypoint.
        workers: The world size: processes started together, all or none.
        resources: What each worker needs.
        timeout: The whole job's time limit, restarts included.
        env: Environment variables for every worker.
        secrets: Project secrets injected as environment variables.
        checkpoint_dir: Where workers save checkpoints (``MODELYARD_CHECKPOINT_DIR``);
            default: a folder of the job's own.
        failure_policy: What a failure leads to.
        runtime: Where the gang runs: ``local`` (processes on the executor's machine),
            ``ray`` (Ray Train workers) or ``kubernetes`` (a Kubeflow TrainJob or
            PyTorchJob, as the platform's values choose).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    entrypoint: str = Field(min_length=1, max_length=1024)
    params: dict[str, Any] = Field(default_factory=dict)
    args: tuple[str, ...] = ()
    workers: int = Field(default=1, ge=1, le=256)
    resources: Resources = Resources()
    timeout: timedelta | None = None
    env: dict[str, str] = Field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    checkpoint_dir: str | None = None
    failure_policy: FailurePolicy = FailurePolicy()
    runtime: Literal["local", "ray", "kubernetes"] = "local"

    @property
    def is_script(self) -> bool:
        return self.entrypoint.endswith(".py")

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint_shape(cls, value: str) -> str:
        if value.endswith(".py"):
            return value
        module, sep, function = value.partition(":")
        if not sep or not module or not function:
            raise ValueError(
                f"{value!r} is neither 'module:function' nor a script path ending in .py"
            )
        return value

    @model_validator(mode="after")
    def _args_for_scripts_only(self) -> TrainingJobSpec:
        if self.args and not self.is_script:
            raise ValueError("args are for script entrypoints; a function takes params")
        if self.params and self.is_script:
            raise ValueError("params are for function entrypoints; a script takes args")
        return self


class TrainingAttemptOut(Spec):
    number: int
    outcome: str
    reason: str
    retried: bool
    exits: list[dict[str, Any]]
    started_at: datetime
    finished_at: datetime | None


class TrainingJobOut(Spec):
    id: str
    name: str
    state: str
    reason: str
    workers: int
    result: Any = None
    mlflow_run_id: str | None = None
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class TrainingJobDetail(TrainingJobOut):
    attempts: list[TrainingAttemptOut]


class Distribution(Spec):
    """One hyperparameter's search space.

    ``uniform(low, high)``, ``loguniform(low, high)``, ``int(low, high)`` (``step`` and
    ``log`` optional) or ``choice(a, b, ...)``.
    """

    kind: Literal["uniform", "loguniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    step: int | None = Field(default=None, ge=1)
    log: bool = False
    choices: tuple[str | int | float | bool, ...] = ()

    @model_validator(mode="after")
    def _bounds(self) -> Distribution:
        if self.kind == "choice":
            if not self.choices:
                raise ValueError("choice(...) needs at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"{self.kind}(low, high) needs both bounds")
        if self.low >= self.high:
            raise ValueError(f"{self.kind}({self.low:g}, {self.high:g}): low must be below high")
        if self.kind == "loguniform" and self.low <= 0:
            raise ValueError("loguniform(low, high) needs low > 0")
        if self.kind == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("int(low, high) takes whole numbers")
        if self.log and (self.kind != "int" or self.low < 1 or (self.step or 1) != 1):
            raise ValueError("log is for int(low, high) with low >= 1 and no step")
        if self.step is not None and self.kind != "int":
            raise ValueError("step is for int(low, high, step)")
        return self

    @classmethod
    def parse(cls, text: str) -> Distribution:
        """``"loguniform(1e-3, 0.3)"``, ``"int(16, 256)"``, ``"choice(gbdt, dart)"``..."""
        match = re.fullmatch(r"\s*(\w+)\s*\((.*)\)\s*", text)
        if match is None:
            raise ValueError(f"{text!r} is not kind(arguments), e.g. uniform(0, 1)")
        kind, raw = match.group(1), [a.strip() for a in match.group(2).split(",") if a.strip()]
        values = [_literal(a) for a in raw]
        if kind == "choice":
            return cls(kind="choice", choices=tuple(values))
        if kind in ("uniform", "loguniform", "int") and len(values) in (2, 3):
            step = int(values[2]) if len(values) == 3 else None
            return cls(kind=kind, low=float(values[0]), high=float(values[1]), step=step)
        raise ValueError(f"{text!r}: {kind} takes (low, high) or is not a known kind")


def _literal(text: str) -> str | int | float | bool:
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip("'\"")


class TuneSpec(Spec):
    """A hyperparameter search: ``trials`` runs of an objective, ``parallel`` at once.

    Args:
        study: The study's name; running it again continues it.
        entrypoint: ``module:function`` or ``file.py:function``, called with ``params``
            and the sampled values; it returns the metric (a number, or a dict holding
            it), or logs it to its MLflow run.
        params: Fixed keyword arguments.
        space: Hyperparameter -> distribution.
        metric: What the search optimises.
        direction: ``minimize`` or ``maximize``.
        trials: Trials the study ends with (those of earlier runs of it count).
        parallel: Trials run at once.
        pruner: ``median`` (median stopping), ``asha`` (successive halving) or ``none``;
            objectives report progress with ``modelyard.training.tuning.report``.
        workers: Processes per trial (distributed trials).
        trial_timeout: A trial's time limit.
        seed: The sampler's seed.
    """

    study: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    entrypoint: str = Field(min_length=3, max_length=1024, pattern=r"^[^:]+:[^:]+$")
    params: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Distribution] = Field(min_length=1)
    metric: str = Field(min_length=1, max_length=250)
    direction: Literal["minimize", "maximize"] = "minimize"
    trials: int = Field(default=20, ge=1, le=10_000)
    parallel: int = Field(default=1, ge=1, le=64)
    pruner: Literal["none", "median", "asha"] = "none"
    workers: int = Field(default=1, ge=1, le=64)
    trial_timeout: timedelta | None = None
    seed: int | None = None

    @model_validator(mode="after")
    def _no_overlap(self) -> TuneSpec:
        both = sorted(set(self.params) & set(self.space))
        if both:
            raise ValueError(f"{both} are both fixed params and searched: choose one")
        return self


class TrialOut(Spec):
    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    reason: str
    mlflow_run_id: str | None
    seconds: float | None


class TuneResult(Spec):
    study: str
    metric: str
    direction: str
    trials: list[TrialOut]
    best: TrialOut | None
    mlflow_run_id: str | None
    registered: str | None = None  # "name/version@alias"
