"""Hyperparameter search as a Ray Tune experiment: the same ``TuneSpec``, objective,
MLflow runs and ``TuneResult`` as the local search (``modelyard.training.tuning``).

How the spec maps onto Tune:

* **Sampler**: Tune's ``OptunaSearch`` with the spec's distributions as Optuna's and
  ``TPESampler(seed=spec.seed)``, the local search's sampler: a seeded study whose
  trials run one at a time draws the same values on both runtimes.
* ``trials`` is ``num_samples``; ``parallel`` is ``max_concurrent_trials``. Each trial
  asks for one CPU and runs the objective in its Tune trial process (``workers`` > 1,
  distributed trials, are not supported on Ray yet and are refused).
* **Pruning**: ``median`` is ``MedianStoppingRule`` (no stop before the second report nor
  before two trials completed, as the local ``MedianPruner(n_startup_trials=2,
  n_warmup_steps=1)``), ``asha`` is ``ASHAScheduler`` (reduction factor 4, as Optuna's
  ``SuccessiveHalvingPruner``). Their time unit is the trial's count of
  :func:`modelyard.training.tuning.report` calls, which hand each point to
  ``ray.tune.report``. A trial the scheduler stops is ``pruned``.
* **MLflow**: the study's run and each trial's child run are opened by this process
  (the trial's when Tune asks the searcher for its values, before it starts), with the
  local search's tags and parameters; the trial logs to it through ``MLFLOW_RUN_ID``;
  this process ends it when the trial ends: ``FINISHED``, ``KILLED`` (pruned) or
  ``FAILED``.
* **Failures**: a trial whose objective raises is ``fail`` with the error as its reason
  and the search goes on; an objective that never produces the metric stops the search.
* ``trial_timeout``: Tune checks stop criteria when a trial reports, so a trial past its
  limit stops (as ``fail``) at its next report; one that never reports runs to its end.

**Continuing a study differs.** The local search keeps the study in Optuna's database
and a run of the same study continues it (its trials count towards ``trials``). Here
each search is a Tune experiment of its own, under ``<workdir>/ray/<study>-<time>``,
with an in-memory Optuna study: running the study again starts a new experiment and a
new study run, and ``trials`` counts that experiment's trials. Tune can restore an
interrupted experiment itself (``Tuner.restore(path, trainable)`` runs its unfinished
trials again), which modelyard does not call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ray
from ray import cloudpickle
from ray import tune as ray_tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch
from ray.tune.stopper import Stopper

from modelyard.errors import InvalidInputError
from modelyard.runtimes.ray.connect import connect
from modelyard.specs.training import TrialOut, TuneResult, TuneSpec
from modelyard.training import tracking, tuning
from modelyard.training.tuning import StudyRun, TuneContext
from modelyard.training.worker import checked_params, resolve_entrypoint

logger = logging.getLogger(__name__)

PRIVATE = "__modelyard__"  # the config key carrying a trial's number and MLflow run
DONE = "modelyard_done"  # in a trial's last result: its objective returned
ASHA_MAX_T = 1_000_000  # reports; ASHA stops a trial there, so: never in practice


class TrialError(RuntimeError):
    """A trial failed; the message is its reason (as the local search words it)."""


class MissingMetric(TrialError):
    """The objective produced no metric: the search stops."""


# -- in the trial's process ---------------------------------------------------------------


@dataclass(frozen=True)
class _TrialSetup:
    """What every trial needs, sent once to the trials' processes."""

    spec: TuneSpec
    context: TuneContext
    entrypoint: str  # with a file's path made absolute
    env: dict[str, str]
    cwd: str
    sys_path: tuple[str, ...]


def _run_trial(config: dict[str, Any], setup: _TrialSetup) -> None:
    """The Tune trainable: the objective with the fixed and sampled parameters, in the
    trial's child run; its intermediate points go to Tune through ``report``; its final
    metric is the trial's last result (with ``DONE``). Raises ``TrialError``."""
    private = config.get(PRIVATE) or {}
    sampled = {key: value for key, value in config.items() if key != PRIVATE}
    run_id = private.get("run_id")
    env = dict(setup.env)
    if run_id:
        env["MLFLOW_RUN_ID"] = run_id
    steps = [0]

    def to_tune(value: float, step: int) -> None:
        steps[0] = step + 1
        ray_tune.report({setup.spec.metric: value, "step": step})

    with _trial_process(env, setup.cwd, setup.sys_path):
        try:
            function = resolve_entrypoint(setup.entrypoint)
            params = checked_params(function, setup.entrypoint, {**setup.spec.params, **sampled})
            if run_id:
                _tag_code(setup.entrypoint, function, run_id)
            with tuning.reporting_to(setup.spec.metric, to_tune):
                result = function(**params)
        except BaseException as exc:  # the user's code may raise anything
            tracking.flush()
            kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
            raise TrialError(f"rank 0 raised {kind}: {exc}") from exc
        finally:
            _end_active_runs()
        tracking.flush()
        value, problem = tuning.judge_value(setup.spec, setup.context, result, run_id)
    if value is None:
        raise MissingMetric(problem)
    if problem:
        raise TrialError(problem)
    ray_tune.report({setup.spec.metric: value, "step": steps[0], DONE: True})


@contextlib.contextmanager
def _trial_process(env: dict[str, str], cwd: str, sys_path: tuple[str, ...]) -> Iterator[None]:
    """The trial's process as a local trial's: the search's environment, its working
    folder (Tune's is the trial's own) and its import path."""
    saved_env = {key: os.environ.get(key) for key in env}
    saved_cwd = os.getcwd()
    os.environ.update(env)
    sys.path[:0] = [entry for entry in sys_path if entry not in sys.path]
    if os.path.isdir(cwd):
        os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _tag_code(entrypoint: str, function: Any, run_id: str) -> None:
    try:
        client = tracking.TrackingConfig.current().client()
        for key, value in tracking.code_tags(entrypoint, function).items():
            client.set_tag(run_id, key, value)
    except Exception:  # tracking is a record of the trial, never a reason for it to fail
        logger.warning("could not tag MLflow run %s with the code version", run_id, exc_info=True)


def _end_active_runs() -> None:
    """A run the objective made active (``log_model`` does) ends with it."""
    if "mlflow" not in sys.modules:
        return
    import mlflow

    with contextlib.suppress(Exception):
        while mlflow.active_run() is not None:
            mlflow.end_run()


# -- in this process ------------------------------------------------------------------


@dataclass
class _Trial:
    number: int
    run_id: str | None
    params: dict[str, Any]
    started: float = field(default_factory=time.monotonic)
    out: TrialOut | None = None


class _TrackedSearch(Searcher):
    """OptunaSearch, numbering the trials as Optuna does and opening each one's child
    MLflow run before it starts; a trial the scheduler stopped is pruned for the
    sampler too (not complete at its last intermediate value)."""

    def __init__(
        self, inner: OptunaSearch, spec: TuneSpec, context: TuneContext, study: StudyRun
    ) -> None:
        super().__init__()
        self.inner = inner
        self.spec = spec
        self.context = context
        self.study = study
        self.trials: dict[str, _Trial] = {}

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        self._metric, self._mode = metric, mode
        return bool(self.inner.set_search_properties(metric, mode, config, **spec))

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return bool(self.inner.set_max_concurrency(max_concurrent))

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        config = self.inner.suggest(trial_id)
        if not isinstance(config, dict):  # None (wait) or Searcher.FINISHED
            return config
        number = len(self.trials)
        run_id = tuning.open_trial_run(self.spec, self.context, self.study, number, config)
        self.trials[trial_id] = _Trial(number, run_id, dict(config))
        return {**config, PRIVATE: {"number": number, "run_id": run_id}}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if result is not None and not result.get(DONE):
            result = None
        self.inner.on_trial_complete(trial_id, result, error)


class _Stops(Stopper):
    """Stops a trial past its time limit, and every trial when the search is cancelled
    or halted (the objective never produces the metric)."""

    def __init__(self, timeout_s: float | None, cancel: threading.Event) -> None:
        self.timeout_s = timeout_s
        self.cancel = cancel
        self.halted = threading.Event()
        self.timed_out: set[str] = set()

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if self.timeout_s is not None and result.get("time_total_s", 0.0) > self.timeout_s:
            self.timed_out.add(trial_id)
            return True
        return False

    def stop_all(self) -> bool:
        return self.cancel.is_set() or self.halted.is_set()

    # Tune pickles its experiment (for restores); what only this process uses is left out.
    def __getstate__(self) -> dict[str, Any]:
        return {"timeout_s": self.timeout_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["timeout_s"], threading.Event())  # type: ignore[misc]


class _Recorder(ray_tune.Callback):
    """Judges each trial as it ends, ends its MLflow run and tells ``on_trial``."""

    def __init__(
        self,
        search: _TrackedSearch,
        stops: _Stops,
        on_trial: Callable[[TrialOut], None],
    ) -> None:
        self.search = search
        self.stops = stops
        self.on_trial = on_trial
        self.missing_metric: str | None = None

    def __getstate__(self) -> dict[str, Any]:  # as _Stops'
        return {"search": self.search, "stops": self.stops}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["search"], state["stops"], lambda _trial: None)  # type: ignore[misc]

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **_: Any
    ) -> None:
        self.record(trial, None)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **_: Any) -> None:
        self.record(trial, _trial_error(trial))

    def record(self, trial: Trial, error: BaseException | None) -> None:
        known = self.search.trials.get(trial.trial_id)
        if known is None or known.out is not None:
            return
        last = trial.last_result or {}
        metric = self.search.spec.metric
        value: float | None = None
        if error is not None:
            state, reason = "fail", _reason(error)
            if isinstance(error, MissingMetric):
                self.missing_metric = reason
                self.stops.halted.set()
        elif last.get(DONE):
            state, reason, value = "complete", "", float(last[metric])
        elif trial.trial_id in self.stops.timed_out:
            limit = self.stops.timeout_s or 0.0
            state, reason = "fail", f"stopped after its timeout of {limit:g} s"
        elif self.stops.stop_all():
            state, reason = "fail", "the search stopped"
        else:
            step, point = last.get("step", 0), last.get(metric)
            shown = f" ({point:g})" if isinstance(point, int | float) else ""
            state, reason = "pruned", f"pruned at step {step}{shown}"
        known.out = TrialOut(
            number=known.number,
            state=state,
            value=value,
            params=known.params,
            reason=reason,
            mlflow_run_id=known.run_id,
            seconds=time.monotonic() - known.started,
        )
        config = self.search.context.tracking
        if known.run_id is not None and config is not None:
            status = {"complete": "FINISHED", "pruned": "KILLED"}.get(state, "FAILED")
            try:
                config.client().set_terminated(known.run_id, status=status)
            except Exception:
                logger.warning("could not end MLflow run %s", known.run_id, exc_info=True)
        self.on_trial(known.out)


def _trial_error(trial: Trial) -> BaseException:
    """The error a trial ended with. Tune writes it to the trial's folder here before
    it tells the callbacks (its own ``get_pickled_error`` reads the copy in the storage,
    which is written later)."""
    error: object = None
    path = trial.pickled_error_file
    if path:
        try:
            with open(path, "rb") as handle:
                error = cloudpickle.load(handle)
        except Exception:
            logger.warning("could not read trial %s's error", trial.trial_id, exc_info=True)
    return error if isinstance(error, BaseException) else TrialError("the trial failed")


def _cause(error: BaseException) -> BaseException:
    """The exception a trial raised, out of Ray's wrappers."""
    seen = 0
    while seen < 5 and not isinstance(error, TrialError):
        inner = getattr(error, "cause", None) or error.__cause__
        if not isinstance(inner, BaseException):
            break
        error, seen = inner, seen + 1
    return error


def _reason(error: BaseException) -> str:
    cause = _cause(error)
    if isinstance(cause, TrialError):
        return str(cause.args[0]) if cause.args else str(cause)
    return f"the trial failed: {type(cause).__name__}: {cause}"


@contextlib.contextmanager
def _quiet_tune() -> Iterator[None]:
    """Tune's console reporter prints its experiment's table to stdout even when told
    to be silent; its older reporter, silent, prints nothing (stdout is the command's
    output, e.g. JSON). Trials are reported through ``on_trial`` instead."""
    previous = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = previous


def _scheduler(spec: TuneSpec) -> TrialScheduler:
    if spec.pruner == "median":
        return MedianStoppingRule(
            time_attr="training_iteration", grace_period=2, min_samples_required=2
        )
    if spec.pruner == "asha":
        return ASHAScheduler(
            time_attr="training_iteration", max_t=ASHA_MAX_T, grace_period=1, reduction_factor=4
        )
    return FIFOScheduler()  # type: ignore[no-untyped-call]


def _trial_folder(trial: Trial) -> str:
    return f"trial-{trial.trial_id}"


def _absolute(entrypoint: str) -> str:
    module, _, function = entrypoint.rpartition(":")
    if module.endswith(".py"):
        return f"{Path(module).resolve()}:{function}"
    return entrypoint


def _setup(spec: TuneSpec, context: TuneContext) -> _TrialSetup:
    env = {
        key: value
        for key, value in os.environ.items()
        if key.startswith(("MODELYARD_", "MLFLOW_")) and key != "MLFLOW_RUN_ID"
    }
    if context.tracking is not None:
        env.update(context.tracking.env())
    env.update(context.env or {})
    return _TrialSetup(
        spec=spec,
        context=context,
        entrypoint=_absolute(spec.entrypoint),
        env=env,
        cwd=os.getcwd(),
        sys_path=tuple(entry for entry in sys.path if entry),
    )


def tune_on_ray(
    spec: TuneSpec,
    context: TuneContext,
    on_trial: Callable[[TrialOut], None] | None = None,
    cancel: threading.Event | None = None,
) -> TuneResult:
    """Run the search as a Ray Tune experiment (see the module's docstring) on the Ray
    ``context.ray_address`` names (None: Ray already initialised here, else a local Ray
    started, and shut down, for the search).

    Raises:
        InvalidInputError: distributed trials (``workers`` > 1).
        MissingMetricError: the objective never returns nor logs ``spec.metric``.
        StudyFailedError: every trial failed.
    """
    import optuna

    if spec.workers > 1:
        raise InvalidInputError(
            "distributed trials (workers > 1) run on the local runtime only",
            code="tune/unsupported",
        )
    cancel = cancel or threading.Event()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = tuning.open_study_run(spec, context, None)
    mode = "min" if spec.direction == "minimize" else "max"
    inner = OptunaSearch(
        space={name: tuning.optuna_distribution(d) for name, d in spec.space.items()},
        metric=spec.metric,
        mode=mode,
        sampler=optuna.samplers.TPESampler(seed=spec.seed),
    )
    search = _TrackedSearch(inner, spec, context, study)
    timeout = spec.trial_timeout.total_seconds() if spec.trial_timeout else None
    stops = _Stops(timeout, cancel)
    recorder = _Recorder(search, stops, on_trial or (lambda _trial: None))
    started_ray = connect(context.ray_address)
    try:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        tuner = ray_tune.Tuner(
            ray_tune.with_parameters(_run_trial, setup=_setup(spec, context)),
            tune_config=ray_tune.TuneConfig(
                metric=spec.metric,
                mode=mode,
                search_alg=search,
                scheduler=_scheduler(spec),
                num_samples=spec.trials,
                max_concurrent_trials=spec.parallel,
                reuse_actors=False,  # a fresh process per trial, as on the local runtime
                trial_dirname_creator=_trial_folder,
            ),
            run_config=ray_tune.RunConfig(
                name=f"{spec.study}-{stamp}",
                storage_path=str((context.workdir / "ray").resolve()),
                stop=stops,
                callbacks=[recorder],
                verbose=0,
            ),
        )
        with _quiet_tune():
            tuner.fit()
    finally:
        if started_ray:
            ray.shutdown()
    for known in search.trials.values():  # a trial Tune never reported as ended
        if known.out is None:
            known.out = TrialOut(
                number=known.number,
                state="fail",
                value=None,
                params=known.params,
                reason="the search stopped",
                mlflow_run_id=known.run_id,
                seconds=None,
            )
            config = context.tracking
            if known.run_id is not None and config is not None:
                config.client().set_terminated(known.run_id, status="FAILED")
    trials = sorted((t.out for t in search.trials.values() if t.out), key=lambda t: t.number)
    complete = [t for t in trials if t.state == "complete" and t.value is not None]
    pick = min if spec.direction == "minimize" else max
    best = pick(complete, key=lambda t: t.value or 0.0) if complete else None
    return tuning.conclude(
        spec,
        context,
        study,
        trials,
        best,
        ended=not cancel.is_set() or recorder.missing_metric is not None,
        cancelled=cancel.is_set(),
        missing_metric=recorder.missing_metric,
    )
