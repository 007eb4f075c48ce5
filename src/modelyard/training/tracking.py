"""Experiment tracking on MLflow: an experiment per project, a run per training job and
per tracked pipeline task, tagged so that any model version leads back to its data and
code, and buffered metric logging for training loops.

The embedded default is ``sqlite:///$MODELYARD_HOME/mlflow.db`` with artifacts under the
modelyard artifact store (``<artifacts>/mlflow``); ``MLFLOW_TRACKING_URI`` points
everything at an MLflow server instead. Workers receive the tracking URI and their run
through ``MLFLOW_TRACKING_URI`` and ``MLFLOW_RUN_ID``, so ``mlflow.start_run()``,
``mlflow.log_metric`` and autologging in user code land in the run modelyard opened.

MLflow is imported lazily: it is an optional dependency (``modelyard[ml]``).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.config import Settings
from modelyard.errors import ConfigurationError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

logger = logging.getLogger(__name__)

# Lineage tags, on runs and copied onto the model versions registered from them.
PROJECT = "modelyard.project"
JOB = "modelyard.job_id"
PIPELINE = "modelyard.pipeline"
PIPELINE_RUN = "modelyard.pipeline_run_id"
TASK = "modelyard.task"
ATTEMPT = "modelyard.attempt"
INPUTS = "modelyard.inputs"  # comma-separated content digests of the input artifacts
OUTPUT = "modelyard.output"  # the content digest of a tracked task's output
CODE_VERSION = "modelyard.code_version"
GIT_COMMIT = "mlflow.source.git.commit"
SOURCE_NAME = "mlflow.source.name"
LINEAGE_TAGS = (PROJECT, JOB, PIPELINE, PIPELINE_RUN, TASK, INPUTS, CODE_VERSION, GIT_COMMIT)

ARTIFACT_ROOT_ENV = "MODELYARD_MLFLOW_ARTIFACT_ROOT"
_MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call


def mlflow_available() -> bool:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return False
    return True


def require_mlflow() -> None:
    if not mlflow_available():
        raise ConfigurationError(
            "tracking needs MLflow: install modelyard[ml]", code="tracking/unavailable"
        )


@dataclass(frozen=True)
class TrackingConfig:
    """Where runs and their artifacts go.

    Args:
        tracking_uri: MLflow's backend (a database URI or an MLflow server).
        artifact_root: Where new experiments keep artifacts; None lets an MLflow server
            decide.
    """

    tracking_uri: str
    artifact_root: str | None

    @classmethod
    def from_settings(cls, settings: Settings) -> TrackingConfig:
        uri = settings.mlflow_tracking_uri
        if uri == f"sqlite:///{settings.home / 'mlflow.db'}":  # the embedded store
            # (also when MLflow itself has put this URI in MLFLOW_TRACKING_URI)
            return cls(uri, settings.resolved_artifacts_url.rstrip("/") + "/mlflow")
        return cls(uri, os.environ.get(ARTIFACT_ROOT_ENV))

    @classmethod
    def current(cls) -> TrackingConfig:
        """The store this process logs to: MLflow's tracking URI where one is set (as in
        a job's workers and a tracked task), else the settings' store."""
        require_mlflow()
        import mlflow

        configured = cls.from_settings(Settings())
        if not mlflow.is_tracking_uri_set():  # type: ignore[no-untyped-call]
            return configured
        uri = mlflow.get_tracking_uri()
        if uri == configured.tracking_uri:  # the embedded store: its artifact root too
            return configured
        return cls(uri, os.environ.get(ARTIFACT_ROOT_ENV))

    def env(self) -> dict[str, str]:
        """The environment that points a worker's MLflow at this store."""
        env = {"MLFLOW_TRACKING_URI": self.tracking_uri}
        if self.artifact_root:
            env[ARTIFACT_ROOT_ENV] = self.artifact_root
        return env

    def client(self) -> MlflowClient:
        require_mlflow()
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)


def project_experiment(config: TrackingConfig, project: str) -> str:
    """The id of the project's experiment (named after it), created on first use with
    its artifacts under the artifact store."""
    from mlflow.exceptions import MlflowException

    client = config.client()
    existing = client.get_experiment_by_name(project)
    if existing is not None:
        return str(existing.experiment_id)
    location = f"{config.artifact_root}/{project}" if config.artifact_root else None
    try:
        return str(
            client.create_experiment(project, artifact_location=location, tags={PROJECT: project})
        )
    except MlflowException:  # another process created it first
        again = client.get_experiment_by_name(project)
        if again is None:
            raise
        return str(again.experiment_id)


def open_run(
    config: TrackingConfig,
    project: str,
    name: str,
    tags: Mapping[str, str],
    run_id: str | None = None,
    parent_run_id: str | None = None,
) -> str:
    """Create a run in the project's experiment (or mark ``run_id`` running again, when
    a job resumes) and return its id."""
    client = config.client()
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
        return run_id
    all_tags = dict(tags)
    if parent_run_id is not None:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(
        project_experiment(config, project), run_name=name, tags=_clean(all_tags)
    )
    return str(run.info.run_id)


def close_run(config: TrackingConfig, run_id: str, status: str) -> None:
    """End a run: ``FINISHED``, ``FAILED`` or ``KILLED``."""
    config.client().set_terminated(run_id, status=status)


_MAX_LISTED_INPUTS = 64  # 64 digests fit MLflow's 8,000-character tag values


def inputs_tag(digests: list[str]) -> str:
    """The ``modelyard.inputs`` tag: the digests, comma-separated; beyond 64 (a reduce
    over a large map), their count and a digest of the sorted list, which fits a tag."""
    if len(digests) <= _MAX_LISTED_INPUTS:
        return ",".join(digests)
    listed = hashlib.sha256(",".join(sorted(digests)).encode()).hexdigest()
    return f"{len(digests)} artifacts, list sha256:{listed}"


def _clean(tags: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in tags.items() if value}


# -- code versions ----------------------------------------------------------------------


def git_commit(path: Path) -> str | None:
    """The commit checked out where ``path`` lives, with ``-dirty`` when files tracked
    by git have changes; None outside a git work tree."""
    folder = path if path.is_dir() else path.parent
    try:
        head = _git(folder, "rev-parse", "HEAD")
        dirty = _git(folder, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


def _git(folder: Path, *args: str) -> str:
    done = subprocess.run(  # noqa: S603  (git, with our own fixed arguments)
        ["git", *args],  # noqa: S607
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=5,
        check=True,
    )
    return done.stdout.strip()


def code_tags(entrypoint: str, function: Callable[..., Any] | None = None) -> dict[str, str]:
    """Tags naming the code a run ran: a fingerprint of the function (its source and the
    user code it calls) or of the script file, and the git commit when there is one."""
    from modelyard.pipelines.fingerprint import code_fingerprint

    tags = {SOURCE_NAME: entrypoint}
    source: Path | None = None
    if function is not None:
        tags[CODE_VERSION] = code_fingerprint(function)
        code = getattr(function, "__code__", None)
        source = Path(code.co_filename) if code is not None else None
    else:
        script = Path(entrypoint.partition(":")[0])
        if script.is_file():
            tags[CODE_VERSION] = hashlib.sha256(script.read_bytes()).hexdigest()
            source = script.resolve()
    if source is not None and source.exists():
        commit = git_commit(source)
        if commit:
            tags[GIT_COMMIT] = commit
    return tags


# -- logging from training code -----------------------------------------------------------


def is_rank_zero() -> bool:
    """Whether this process is rank 0 of its gang (or not in a gang at all)."""
    return os.environ.get("RANK", "0") == "0"


class MetricLogger:
    """Metric points buffered in memory and written to MLflow in batches of up to 1,000
    (one request each) when the buffer fills, every ``flush_seconds``, and at the end.

    Logging 10,000 points one ``mlflow.log_metric`` call at a time costs 10,000 writes;
    here it costs ten. Only rank 0 of a gang logs; other ranks' calls do nothing. Each
    point is bound to its run when it is logged, so a flush after the run ended still
    writes it there. A failed write keeps the points for the next flush (up to
    ``max_buffered``; beyond that the oldest are dropped, with a warning): tracking never
    stops a training loop.

    Args:
        run_id: The run to log to; default: see :func:`current_run_id`.
        flush_seconds: The longest a point waits in the buffer (checked when logging).
        max_buffered: Points kept while the store cannot be written to.
    """

    def __init__(
        self, run_id: str | None = None, flush_seconds: float = 5.0, max_buffered: int = 100_000
    ) -> None:
        self.enabled = is_rank_zero()
        self.flush_seconds = flush_seconds
        self.max_buffered = max_buffered
        self._points: list[tuple[str, Metric]] = []
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._run_id = run_id

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        self.log_metrics({key: value}, step)

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Metric

        run_id = self._run_id or current_run_id()
        now = int(time.time() * 1000)
        with self._lock:
            self._points.extend(
                (run_id, Metric(key, float(value), now, step)) for key, value in metrics.items()
            )
            full = len(self._points) >= _MAX_BATCH
        if full or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write every buffered point (kept for the next flush if the store fails)."""
        with self._lock:
            points, self._points = self._points, []
            self._last_flush = time.monotonic()
        if not points:
            return
        by_run: dict[str, list[Metric]] = {}
        for run_id, point in points:
            by_run.setdefault(run_id, []).append(point)
        try:
            client = TrackingConfig.current().client()
            for run_id, run_points in by_run.items():
                while run_points:
                    client.log_batch(run_id, metrics=run_points[:_MAX_BATCH])
                    del run_points[:_MAX_BATCH]
        except Exception:
            unwritten = [(run_id, p) for run_id, ps in by_run.items() for p in ps]
            logger.warning(
                "could not write %d metric points; kept for the next flush",
                len(unwritten),
                exc_info=True,
            )
            with self._lock:
                self._points = (unwritten + self._points)[-self.max_buffered :]


def current_run_id() -> str:
    """The active MLflow run, else the one modelyard gave this process (``MLFLOW_RUN_ID``,
    left in place), else a new run, made active, in the store this process logs to
    (never MLflow's default of a database in the current folder)."""
    require_mlflow()
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        return str(active.info.run_id)
    given = os.environ.get("MLFLOW_RUN_ID")
    if given:
        return given
    mlflow.set_tracking_uri(TrackingConfig.current().tracking_uri)
    return str(mlflow.start_run().info.run_id)


def ensure_active_run() -> str:
    """Make this process's run (see :func:`current_run_id`) MLflow's active run, for the
    fluent calls that need one (``log_model``); returns its id."""
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        return str(active.info.run_id)
    run_id = current_run_id()
    if mlflow.active_run() is None:
        mlflow.set_tracking_uri(TrackingConfig.current().tracking_uri)
        mlflow.start_run(run_id=run_id)
    return run_id


_default: MetricLogger | None = None
_default_lock = threading.Lock()


def _logger() -> MetricLogger:
    global _default
    with _default_lock:
        if _default is None:
            _default = MetricLogger()
            atexit.register(_default.flush)
        return _default


def log_metric(key: str, value: float, step: int = 0) -> None:
    """Log one metric point to this process's run (buffered; see :class:`MetricLogger`)."""
    _logger().log_metric(key, value, step)


def log_metrics(metrics: Mapping[str, float], step: int = 0) -> None:
    """Log several metric points at one step (buffered)."""
    _logger().log_metrics(metrics, step)


def log_params(params: Mapping[str, Any]) -> None:
    """Log parameters to this process's run, in one request (rank 0 only)."""
    if not is_rank_zero():
        return
    from mlflow.entities import Param

    TrackingConfig.current().client().log_batch(
        current_run_id(), params=[Param(key, str(value)[:6000]) for key, value in params.items()]
    )


def flush() -> None:
    """Write every buffered metric point now."""
    if _default is not None:
        _default.flush()


@contextmanager
def active_run(config: TrackingConfig, run_id: str) -> Iterator[str]:
    """Make ``run_id`` MLflow's active run in this process for the block, so that
    ``mlflow.log_*`` calls and autologging land in it. At the end, buffered metrics are
    written and the run ends ``FINISHED``, or ``FAILED`` if the block raised. A run left
    active by earlier code in this (long-lived) process is ended first. Tracking errors
    at the end are logged, never raised over the block's own outcome."""
    import mlflow

    while mlflow.active_run() is not None:  # a previous task's leftover: not ours to keep
        mlflow.end_run()
    mlflow.set_tracking_uri(config.tracking_uri)
    try:
        mlflow.start_run(run_id=run_id)
    except Exception:
        logger.warning("could not start MLflow run %s; running untracked", run_id, exc_info=True)
        yield run_id
        return
    status = "FAILED"
    try:
        yield run_id
        status = "FINISHED"
    finally:
        try:
            flush()
            mlflow.end_run(status)
        except Exception:
            logger.warning("could not end MLflow run %s", run_id, exc_info=True)
