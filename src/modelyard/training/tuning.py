"""Hyperparameter search with Optuna on this machine: trials run as training gangs
(``parallel`` at once), each in a child MLflow run of the study's run; pruning with
median stopping or successive halving; the study lives in a database and continues
where it stopped when the command runs again.

The objective is a training function. It returns the metric (a number, or a dict that
holds it) or logs it to its MLflow run; it may report progress with :func:`report`, which
logs the point and raises ``optuna.TrialPruned`` when the pruner stops the trial.

``tune(..., runtime="ray")`` runs the same search as a Ray Tune experiment instead
(``modelyard.runtimes.ray.tune``); the MLflow runs and the result are the same.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from modelyard.config import Settings
from modelyard.errors import InvalidInputError, ModelyardError
from modelyard.pipelines.runs import new_owner, owner_gone
from modelyard.specs.training import (
    Distribution,
    FailurePolicy,
    TrainingJobSpec,
    TrialOut,
    TuneResult,
    TuneSpec,
)
from modelyard.training import tracking
from modelyard.training.launch import GangLauncher, GangOutcome, JobResult
from modelyard.training.tracking import TrackingConfig

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

HEARTBEAT_S = 10.0  # how often a search marks its running trials alive
HEARTBEAT_GRACE_S = 60.0  # silence after which a search on another machine is gone
TRIAL_ENV = "MODELYARD_TRIAL"  # JSON: storage, study, trial id, pruner (set in trials)
PRUNED = "optuna.exceptions.TrialPruned"
STUDY_TAG = "modelyard.study"
TRIAL_TAG = "modelyard.trial"
RUNTIMES = ("local", "ray")
TuneRuntime = Literal["local", "ray"]


class MissingMetricError(InvalidInputError):
    """The objective neither returned nor logged the metric the search optimises."""

    default_code = "tune/missing_metric"


class StudyFailedError(ModelyardError):
    """No trial completed (the command exits 1, as a failed job does)."""

    http_status = 422
    default_code = "tune/failed"


# -- inside a trial ---------------------------------------------------------------------


Reporter = Callable[[float, int], None]
# (metric, reporter) of a runtime that runs the trial in this process (Ray Tune).
_in_process: tuple[str, Reporter] | None = None


@contextmanager
def reporting_to(metric: str, reporter: Reporter) -> Iterator[None]:
    """Within the block, :func:`report` logs ``metric`` and hands each point to
    ``reporter`` instead of an Optuna trial: for runtimes that run a trial in the
    calling process and decide pruning themselves (Ray Tune's schedulers)."""
    global _in_process
    previous, _in_process = _in_process, (metric, reporter)
    try:
        yield
    finally:
        _in_process = previous


def report(value: float, step: int) -> None:
    """Report the metric at ``step`` (e.g. an epoch): logged to the trial's MLflow run
    and, in a search with a pruner, given to it; raises ``optuna.TrialPruned`` when the
    trial should stop (under Ray Tune, Tune's scheduler stops the trial itself). Outside
    a search it only logs."""
    if _in_process is not None:
        metric, reporter = _in_process
        tracking.log_metric(metric, value, step)
        # A trial Tune's scheduler stops ends without warning: its points are written now.
        tracking.flush()
        reporter(value, step)
        return
    tracking.log_metric(_trial_metric(), value, step)
    trial = _current_trial()
    if trial is None:
        return
    trial.report(value, step)
    if trial.should_prune():
        tracking.flush()
        import optuna

        raise optuna.TrialPruned(f"pruned at step {step} ({value:g})")


def _trial_metric() -> str:
    raw = os.environ.get(TRIAL_ENV)
    return str(json.loads(raw)["metric"]) if raw else "objective"


@lru_cache(maxsize=1)
def _current_trial() -> optuna.trial.Trial | None:
    raw = os.environ.get(TRIAL_ENV)
    if not raw or not tracking.is_rank_zero():
        return None
    import optuna

    wanted = json.loads(raw)
    study = optuna.load_study(
        study_name=wanted["study"],
        storage=_storage(wanted["storage"]),
        pruner=_pruner(wanted["pruner"]),
    )
    return optuna.trial.Trial(study, int(wanted["trial_id"]))


# -- the search -------------------------------------------------------------------------


@dataclass(frozen=True)
class TuneContext:
    """Where a search keeps its study, trials' folders and runs.

    Args:
        storage_url: Optuna's storage (a database URL).
        workdir: Folders of the trials' gangs (logs, reports, checkpoints).
        tracking: Where the MLflow runs go; None runs trials untracked (then the
            objective must return the metric).
        project: The project whose experiment holds the runs.
        env: Extra environment for every trial (e.g. secrets).
        ray_address: The Ray a search on the ``ray`` runtime uses (see
            ``Settings.ray_address``); None: Ray already initialised in this process,
            else a local Ray started for the search.
    """

    storage_url: str
    workdir: Path
    tracking: TrackingConfig | None
    project: str = "default"
    env: dict[str, str] | None = None
    ray_address: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, project: str = "default") -> TuneContext:
        """The embedded defaults (or the configured stores): the study in the settings'
        tuning storage, trials' folders in the home, runs where this process logs."""
        config = TrackingConfig.current() if tracking.mlflow_available() else None
        return cls(
            settings.resolved_tuning_storage_url,
            settings.home / "tuning",
            config,
            project,
            ray_address=settings.ray_address,
        )


def tune(
    spec: TuneSpec,
    context: TuneContext,
    on_trial: Callable[[TrialOut], None] | None = None,
    cancel: threading.Event | None = None,
    runtime: TuneRuntime = "local",
) -> TuneResult:
    """Run the search until the study has ``spec.trials`` finished trials.

    A trial that fails is recorded as failed and the search goes on; an objective that
    does not produce the metric stops the search (every trial would fail the same way).

    Args:
        spec: The search.
        context: Where the study, the trials' folders and the runs go.
        on_trial: Called with each trial as it ends.
        cancel: Set to stop the search (running trials stop; a local study continues
            from there when run again).
        runtime: ``local`` (Optuna, trials as gangs on this machine) or ``ray`` (a Ray
            Tune experiment; see ``modelyard.runtimes.ray.tune``).

    Raises:
        InvalidInputError: an unknown runtime.
        MissingMetricError: the objective never returns nor logs ``spec.metric``.
        StudyFailedError: every trial failed.
    """
    if runtime == "ray":
        from modelyard.runtimes.ray.tune import tune_on_ray

        return tune_on_ray(spec, context, on_trial, cancel)
    if runtime != "local":
        raise InvalidInputError(
            f"unknown tuning runtime {runtime!r}; available: {', '.join(RUNTIMES)}",
            code="tune/unknown_runtime",
        )
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _storage(context.storage_url)
    study = optuna.create_study(
        study_name=spec.study,
        storage=storage,
        direction=spec.direction,
        pruner=_pruner(spec.pruner),
        load_if_exists=True,
    )
    # A continued study's sampler must not draw the first run's values again.
    seed = None if spec.seed is None else spec.seed + len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.TPESampler(seed=seed)
    _check_same_search(study, spec)
    _fail_orphans(study, context.tracking)
    search = _Search(spec, context, study, on_trial or (lambda _trial: None), cancel)
    return search.run()


def _storage(url: str) -> optuna.storages.RDBStorage:
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 60}}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def _pruner(name: str) -> optuna.pruners.BasePruner:
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def _check_same_search(study: optuna.Study, spec: TuneSpec) -> None:
    """A study continued must be the same search: same objective, space and metric."""
    signature = json.dumps(
        {
            "entrypoint": spec.entrypoint,
            "metric": spec.metric,
            "direction": spec.direction,
            "space": {k: v.model_dump(mode="json") for k, v in spec.space.items()},
        },
        sort_keys=True,
    )
    known = study.user_attrs.get("search")
    if known is None:
        study.set_user_attr("search", signature)
    elif known != signature:
        raise InvalidInputError(
            f"study {spec.study!r} exists with another objective, metric, direction or search "
            "space; "
            "continue it with the same ones, or name a new study",
            code="tune/study_mismatch",
        )


def _fail_orphans(study: optuna.Study, config: TrackingConfig | None) -> None:
    """Trials left running by a search that is gone are failed (with their MLflow runs),
    and do not count: the search that continues the study runs new ones in their place.

    A search is gone when its process on this machine has exited, or, wherever it ran,
    when it has not renewed its trials' heartbeat for ``HEARTBEAT_GRACE_S``.
    """
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get("modelyard_owner")
        beat = trial.user_attrs.get("modelyard_heartbeat")
        silent = isinstance(beat, int | float) and time.time() - beat > HEARTBEAT_GRACE_S
        if (isinstance(owner, str) and owner_gone(owner)) or silent:
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            run_id = trial.user_attrs.get("mlflow_run_id")
            if config is not None and isinstance(run_id, str):
                try:
                    config.client().set_terminated(run_id, status="FAILED")
                except Exception:
                    logger.warning("could not end MLflow run %s", run_id, exc_info=True)


_Verdict = tuple[Any, float | None, str]  # a trial's state, value and, if not complete, why


class _Search:
    def __init__(
        self,
        spec: TuneSpec,
        context: TuneContext,
        study: optuna.Study,
        on_trial: Callable[[TrialOut], None],
        cancel: threading.Event | None,
    ) -> None:
        self.spec = spec
        self.context = context
        self.study = study
        self.on_trial = on_trial
        self.cancel = cancel or threading.Event()
        self.owner = new_owner()
        self._last_beat = time.monotonic()
        self.distributions = {name: optuna_distribution(d) for name, d in spec.space.items()}
        known = study.user_attrs.get("mlflow_run_id")
        self.study_run = open_study_run(spec, context, known if isinstance(known, str) else None)
        if self.study_run.owned and self.study_run.run_id not in (None, known):
            study.set_user_attr("mlflow_run_id", self.study_run.run_id)
        self.missing_metric: str | None = None

    def run(self) -> TuneResult:
        remaining = self.spec.trials - self._counted()
        running: dict[Future[_Verdict], optuna.trial.Trial] = {}
        pool = ThreadPoolExecutor(self.spec.parallel, thread_name_prefix="trial")
        try:
            while (remaining > 0 or running) and not self.cancel.is_set():
                while remaining > 0 and len(running) < self.spec.parallel:
                    if self.missing_metric:
                        remaining = 0
                        break
                    trial = self.study.ask(self.distributions)
                    trial.set_user_attr("modelyard_owner", self.owner)
                    trial.set_user_attr("modelyard_heartbeat", time.time())
                    running[pool.submit(self._trial, trial)] = trial
                    remaining -= 1
                done, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                self._heartbeat(running.values())
                for future in done:
                    self._record(running.pop(future), future)
        except BaseException:
            self.cancel.set()  # Ctrl-C or an error here: stop every running gang
            raise
        finally:
            # Trials still running were cancelled: their gangs stop, and each is told
            # (as not finished, so a continued search runs it again).
            for future in as_completed(running):
                try:
                    self._record(running[future], future)
                except Exception:
                    logger.warning("could not record a cancelled trial", exc_info=True)
            pool.shutdown(wait=True)
        return self._result()

    def _heartbeat(self, trials: Iterable[optuna.trial.Trial]) -> None:
        if time.monotonic() - self._last_beat < HEARTBEAT_S:
            return
        self._last_beat = time.monotonic()
        for trial in trials:
            trial.set_user_attr("modelyard_heartbeat", time.time())

    def _counted(self) -> int:
        """Trials that count towards the study's total: completed, pruned, and failed
        for a reason of their own (not cancelled, not orphaned by a stopped search)."""
        from optuna.trial import TrialState

        return sum(
            t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and bool(t.user_attrs.get("reason")))
            for t in self.study.get_trials(deepcopy=False)
        )

    def _record(self, trial: optuna.trial.Trial, future: Future[_Verdict]) -> None:
        from optuna.trial import TrialState

        try:
            state, value, reason = future.result()
        except Exception as exc:  # the trial's own bookkeeping failed, not its objective
            state, value, reason = TrialState.FAIL, None, f"the trial could not run: {exc}"
        if reason:
            trial.set_user_attr("reason", reason)
        self.study.tell(
            trial, value if state == TrialState.COMPLETE else None, state, skip_if_finished=True
        )
        self.on_trial(self._out(self.study.get_trials(deepcopy=False)[trial.number]))

    # -- one trial ------------------------------------------------------------------------

    def _trial(self, trial: optuna.trial.Trial) -> _Verdict:
        """Run one trial's gang; returns its state, value and, unless it completed, why."""

        params = {**self.spec.params, **trial.params}
        run_id = self._child_run(trial)
        try:
            return self._run_trial(trial, params, run_id)
        except Exception:
            if run_id is not None:
                self._close(run_id, "FAILED")
            raise

    def _run_trial(
        self, trial: optuna.trial.Trial, params: dict[str, Any], run_id: str | None
    ) -> _Verdict:
        from optuna.trial import TrialState

        env = dict(self.context.env or {})
        env[TRIAL_ENV] = json.dumps(
            {
                "storage": self.context.storage_url,
                "study": self.spec.study,
                "trial_id": trial._trial_id,  # what optuna.trial.Trial() takes
                "pruner": self.spec.pruner,
                "metric": self.spec.metric,
            }
        )
        if run_id is not None and self.context.tracking is not None:
            env.update({**self.context.tracking.env(), "MLFLOW_RUN_ID": run_id})
        job = TrainingJobSpec(
            name=f"{self.spec.study}-{trial.number}",
            entrypoint=self.spec.entrypoint,
            params=params,
            workers=self.spec.workers,
            timeout=self.spec.trial_timeout,
            failure_policy=FailurePolicy(backoff_limit=0),
        )
        # The trial's id is unique in the storage: a study of the same name created anew
        # never finds another trial's checkpoints here.
        trial_id = trial._trial_id
        folder = self.context.workdir / self.spec.study / f"trial-{trial.number}-{trial_id}"
        result = GangLauncher(job, folder, env=env, cancel=self.cancel).run()
        state, value, reason = self._judge(result, run_id)
        if run_id is not None:
            status = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED"}
            self._close(run_id, status.get(state, "FAILED"))
        return state, value, reason

    def _judge(self, result: JobResult, run_id: str | None) -> _Verdict:
        from optuna.trial import TrialState

        if result.outcome is GangOutcome.CANCELLED:
            return TrialState.FAIL, None, ""  # not counted: a continued search runs it again
        if result.outcome is not GangOutcome.SUCCEEDED:
            cause = result.attempts[-1].cause if result.attempts else None
            if cause is not None and cause.error_type == PRUNED:
                return TrialState.PRUNED, None, cause.message or "pruned"
            return TrialState.FAIL, None, result.reason
        value, problem = judge_value(self.spec, self.context, result.result, run_id)
        if value is None:
            self.missing_metric = problem
            return TrialState.FAIL, None, problem
        if problem:
            return TrialState.FAIL, None, problem
        return TrialState.COMPLETE, value, ""

    # -- MLflow ---------------------------------------------------------------------------

    def _child_run(self, trial: optuna.trial.Trial) -> str | None:
        run_id = open_trial_run(
            self.spec, self.context, self.study_run, trial.number, dict(trial.params)
        )
        if run_id is not None:
            trial.set_user_attr("mlflow_run_id", run_id)
        return run_id

    def _close(self, run_id: str, status: str) -> None:
        assert self.context.tracking is not None
        self.context.tracking.client().set_terminated(run_id, status=status)

    def _result(self) -> TuneResult:
        from optuna.trial import TrialState

        trials = [self._out(t) for t in self.study.get_trials(deepcopy=False)]
        complete = [t for t in trials if t.state == TrialState.COMPLETE.name.lower()]
        best = self._out(self.study.best_trial) if complete else None
        return conclude(
            self.spec,
            self.context,
            self.study_run,
            trials,
            best,
            ended=len(trials) >= self.spec.trials or self.missing_metric is not None,
            cancelled=self.cancel.is_set(),
            missing_metric=self.missing_metric,
        )

    @staticmethod
    def _out(trial: optuna.trial.FrozenTrial) -> TrialOut:
        seconds = None
        if trial.datetime_start and trial.datetime_complete:
            seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
        return TrialOut(
            number=trial.number,
            state=trial.state.name.lower(),
            value=trial.value,
            params=dict(trial.params),
            reason=str(trial.user_attrs.get("reason") or _default_reason(trial)),
            mlflow_run_id=trial.user_attrs.get("mlflow_run_id"),
            seconds=seconds,
        )


# -- shared by the runtimes: the study's and trials' MLflow runs, the verdict -------------


@dataclass(frozen=True)
class StudyRun:
    """The study's MLflow run (None when untracked) and what its trials' runs inherit.

    Args:
        run_id: The run.
        owned: Whether the search opened it (else it is a tracked task's run, which the
            search must not end).
        lineage: Lineage tags of a tracked task's run, copied onto the trials' runs.
    """

    run_id: str | None
    owned: bool = True
    lineage: dict[str, str] | None = None


def open_study_run(spec: TuneSpec, context: TuneContext, known: str | None) -> StudyRun:
    """The study's run: the MLflow run active here (a tracked pipeline task tuning),
    whose lineage tags the trials inherit, else ``known`` (the study's run from an earlier
    search of it) opened again, else a new run of the study's own."""
    config = context.tracking
    if config is None or not tracking.mlflow_available():
        return StudyRun(None)
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        lineage = {
            key: value
            for key, value in active.data.tags.items()
            if key in tracking.LINEAGE_TAGS and key != tracking.CODE_VERSION
        }
        return StudyRun(str(active.info.run_id), owned=False, lineage=lineage)
    from mlflow.exceptions import MlflowException

    tags = {tracking.PROJECT: context.project, STUDY_TAG: spec.study}
    name = f"tune {spec.study}"
    try:
        run_id = tracking.open_run(config, context.project, name, tags, run_id=known)
    except MlflowException:  # the study's run was deleted: it gets a new one
        run_id = tracking.open_run(config, context.project, name, tags)
    config.client().log_batch(
        run_id,
        params=mlflow_params(
            {"metric": spec.metric, "direction": spec.direction, "entrypoint": spec.entrypoint}
        ),
    )
    return StudyRun(run_id)


def open_trial_run(
    spec: TuneSpec, context: TuneContext, study: StudyRun, number: int, sampled: dict[str, Any]
) -> str | None:
    """A trial's run, a child of the study's, with its parameters; None when untracked."""
    config = context.tracking
    if config is None or study.run_id is None:
        return None
    lineage = study.lineage or {}
    tags = {
        tracking.PROJECT: context.project,
        **lineage,
        STUDY_TAG: spec.study,
        TRIAL_TAG: str(number),
    }
    run_id = tracking.open_run(
        config,
        lineage.get(tracking.PROJECT, context.project),
        f"{spec.study}-{number}",
        tags,
        parent_run_id=study.run_id,
    )
    config.client().log_batch(run_id, params=mlflow_params({**spec.params, **sampled}))
    return run_id


def judge_value(
    spec: TuneSpec, context: TuneContext, result: Any, run_id: str | None
) -> tuple[float | None, str]:
    """A finished trial's metric: returned by the objective, else logged to its run.
    Returns (value, "") when usable; (None, why) when the objective never produced it
    (the search stops); (value, why) when it is not finite (the trial fails)."""
    value = metric_from(result, spec.metric)
    if value is None and run_id is not None and context.tracking is not None:
        logged = context.tracking.client().get_run(run_id).data.metrics
        value = logged.get(spec.metric)
        if value is None:
            return None, missing_metric(spec.metric, result, sorted(logged))
    elif value is None:
        return None, missing_metric(spec.metric, result, [])
    if not math.isfinite(value):
        return value, f"{spec.metric} is {value} (diverged?)"
    return value, ""


def conclude(
    spec: TuneSpec,
    context: TuneContext,
    study: StudyRun,
    trials: list[TrialOut],
    best: TrialOut | None,
    *,
    ended: bool,
    cancelled: bool,
    missing_metric: str | None,
) -> TuneResult:
    """The search's result: the best trial noted on the study's run, which ends when
    the search has (unless a tracked task owns it).

    Raises:
        MissingMetricError: the objective never produced the metric.
        StudyFailedError: every trial failed (and the search was not cancelled).
    """
    config = context.tracking
    if best is not None and study.run_id is not None and config is not None:
        client = config.client()
        client.log_metric(study.run_id, f"best_{spec.metric}", best.value or 0.0)
        client.set_tag(study.run_id, "modelyard.best_trial", str(best.number))
        client.set_tag(study.run_id, "modelyard.best_run", best.mlflow_run_id or "")
    result = TuneResult(
        study=spec.study,
        metric=spec.metric,
        direction=spec.direction,
        trials=trials,
        best=best,
        mlflow_run_id=study.run_id,
    )
    if study.owned and study.run_id is not None and config is not None and (ended or cancelled):
        status = "FINISHED" if best is not None else "FAILED"
        config.client().set_terminated(study.run_id, status=status)
    if missing_metric is not None:
        raise MissingMetricError(missing_metric, details={"study": spec.study})
    if best is None and not cancelled:
        reasons = sorted({t.reason for t in trials if t.reason})
        raise StudyFailedError(
            f"every trial of {spec.study!r} failed: " + "; ".join(reasons[:3]),
            details={"study": spec.study},
        )
    return result


def _default_reason(trial: optuna.trial.FrozenTrial) -> str:
    from optuna.trial import TrialState

    # The only trials failed without a reason are those whose search process stopped.
    return "its search process stopped" if trial.state == TrialState.FAIL else ""


def metric_from(result: Any, metric: str) -> float | None:
    """The metric in an objective's return value (a number, or a dict holding it)."""
    if isinstance(result, bool):
        return None
    if isinstance(result, int | float):
        return float(result)
    if isinstance(result, dict) and isinstance(result.get(metric), int | float):
        return float(result[metric])
    return None


def missing_metric(metric: str, result: Any, logged: list[str]) -> str:
    returned = sorted(result) if isinstance(result, dict) else type(result).__name__
    return (
        f"the objective never produced metric {metric!r}: it returned {returned} and "
        f"logged {logged or 'no metrics'}; return it (a number or a dict holding it) or "
        "log it with modelyard.training.tracking.log_metric"
    )


def mlflow_params(values: dict[str, Any]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(key, str(value)[:6000]) for key, value in values.items()]


def optuna_distribution(spec: Distribution) -> optuna.distributions.BaseDistribution:
    import optuna

    if spec.kind == "choice":
        return optuna.distributions.CategoricalDistribution(list(spec.choices))
    assert spec.low is not None
    assert spec.high is not None
    if spec.kind == "int":
        return optuna.distributions.IntDistribution(
            int(spec.low), int(spec.high), log=spec.log, step=spec.step or 1
        )
    return optuna.distributions.FloatDistribution(
        spec.low, spec.high, log=spec.kind == "loguniform"
    )


def best_model_uri(config: TrackingConfig, result: TuneResult) -> str:
    """The model the best trial logged (``registry.log_model`` in the objective)."""
    if result.best is None or result.best.mlflow_run_id is None:
        raise StudyFailedError(f"study {result.study!r} has no completed, tracked trial")
    client = config.client()
    run = client.get_run(result.best.mlflow_run_id)
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
    )
    if not models:
        raise InvalidInputError(
            f"the best trial ({result.best.number}) logged no model: call "
            "modelyard.training.registry.log_model(model, input_example=...) in the objective",
            code="tune/no_model",
        )
    return str(models[0].model_uri)
