"""Training jobs on Ray Train: a ``TrainingJobSpec``'s gang as Ray Train workers, run by
the same worker command as on this machine, restarted by the same failure policy.

**Why a ``DataParallelTrainer`` with a backend of our own, not ``TorchTrainer``.**
Code written for the local runtime (and for torchrun, Kubeflow's PyTorchJob) reads
``RANK``/``WORLD_SIZE`` and calls ``torch.distributed.init_process_group("gloo")``
itself. ``TorchTrainer`` has already initialised the process group by then, so that
call fails ("initialize the default process group twice"); guarding it would mean
destroying Ray's group and rendezvousing again on the same port, or changing the user's
code. ``_GangBackend`` does only the wiring: worker 0's node address and a free port
there as ``MASTER_ADDR``/``MASTER_PORT`` on every worker (as ``TorchConfig`` does with
``init_method="env"``), without initialising anything. The user's code owns its process
group, exactly as under the local launcher; a group it leaves open is destroyed at the
end. The same code then runs unchanged on both runtimes (``tests.training.targets``).

**Each Ray Train worker runs the local worker's command** (``python -m
modelyard.training.worker ENTRYPOINT PARAMS REPORT`` for a function, the script for a
script) in a child process with the local launcher's environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` and ``GROUP_RANK`` from
``ray.train.get_context()``, ``MODELYARD_CHECKPOINT_DIR``, ``MODELYARD_RESTART_COUNT``,
the job's env): one entrypoint, two launchers. So the worker's log is
``attempt-N/rank-R.log`` (``modelyard train logs``), its result and exception go to
its report file, and its exit code (a SIGKILL is -9) decides the failure policy as on
this machine. The child dies with its Ray worker (``modelyard.runtimes.ray.child``).

**Restarts are modelyard's, not Ray Train's.** ``RayGangLauncher`` is the local
``GangLauncher`` with one attempt replaced: each attempt is one Ray Train run with
``FailureConfig(max_failures=0)``, and the launcher's loop applies the
``FailurePolicy``. Ray Train's own ``max_failures`` would restart on *every* worker
failure, a bug in the user's code included, with no backoff and no record of the
attempts; here a killed worker (or an exit code or exception the policy lists) is
retried up to ``backoff_limit`` times after ``backoff``, a bug fails the job at once,
and each attempt is recorded in the store as on the local runtime.

**Checkpoints and files.** ``MODELYARD_CHECKPOINT_DIR`` (the job's
``checkpoint_dir``, default ``<job folder>/checkpoints``), the attempt folders (logs,
report files) and Ray Train's own storage (``<job folder>/ray``) are paths every worker
must reach: on one machine, a local folder; on a cluster, a shared file system mounted
at the same path on every node. A restarted gang resumes from the latest checkpoint
there, as on this machine.

Cancellation and the job's timeout stop the workers' processes (SIGTERM, then SIGKILL
after a grace period) through a ``stop`` file in the attempt's folder, which each Ray
worker watches; the Ray Train run then ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.backend import Backend, BackendConfig
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

from modelyard.runtimes.ray.connect import connect
from modelyard.training.launch import (
    GangAttempt,
    GangLauncher,
    GangOutcome,
    JobResult,
    WorkerExit,
    describe_exit,
    root_cause,
)

logger = logging.getLogger(__name__)

STOP_FILE = "stop"  # in an attempt's folder: its workers stop their processes
_POLL_S = 0.1
_STOP_GRACE_S = 5.0


# -- in each Ray Train worker ---------------------------------------------------------


class GangWorkerError(RuntimeError):
    """A worker's process ended with a non-zero exit code (the code is in the attempt's
    ``rank-R.exit`` file; the exception, for a function, in its report file)."""


class _GangBackendConfig(BackendConfig):
    @property
    def backend_cls(self) -> type[Backend]:
        return _GangBackend


class _GangBackend(Backend):
    """``MASTER_ADDR``/``MASTER_PORT`` on every worker; the process group is the user's."""

    def on_start(self, worker_group: Any, backend_config: BackendConfig) -> None:
        from ray.train._internal.utils import get_address_and_port

        address, port = worker_group.execute_single(0, get_address_and_port)
        worker_group.execute(_set_master, address=address, port=port)

    def on_shutdown(self, worker_group: Any, backend_config: BackendConfig) -> None:
        with contextlib.suppress(Exception):
            worker_group.execute(_destroy_process_group)


def _set_master(address: str, port: int) -> None:
    os.environ["MASTER_ADDR"] = address
    os.environ["MASTER_PORT"] = str(port)


def _destroy_process_group() -> None:
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _gang_worker(config: dict[str, Any]) -> None:
    """A Ray Train worker: runs its rank's command in a child process, with the local
    launcher's environment, until it exits or the attempt's ``stop`` file appears.

    Raises:
        GangWorkerError: the process exited with a non-zero code.
    """
    context = ray.train.get_context()
    rank = context.get_world_rank()
    folder = Path(config["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        "OMP_NUM_THREADS": config["threads"],  # unless Ray or the job sets it
        **os.environ,
        **config["env"],
        "WORLD_SIZE": str(context.get_world_size()),
        "RANK": str(rank),
        "LOCAL_RANK": str(context.get_local_rank()),
        "LOCAL_WORLD_SIZE": str(context.get_local_world_size()),
        "GROUP_RANK": str(context.get_node_rank()),
    }
    command = [
        sys.executable,
        "-m",
        "modelyard.runtimes.ray.child",
        str(os.getpid()),
        *config["commands"][rank],
    ]
    cwd = config["cwd"] if os.path.isdir(config["cwd"]) else None
    with (folder / f"rank-{rank}.log").open("ab") as log:
        process = subprocess.Popen(  # noqa: S603  (our interpreter, the job's entrypoint)
            command,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a process group: stopping it stops what it started
        )
    code = _wait(process, folder / STOP_FILE)
    (folder / f"rank-{rank}.exit").write_text(str(code))
    if code != 0:
        raise GangWorkerError(f"rank {rank} exited with code {code}")


def _wait(process: subprocess.Popen[bytes], stop: Path) -> int:
    while process.poll() is None:
        if stop.exists():
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
            break
        time.sleep(_POLL_S)
    return int(process.returncode)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)


# -- in this process ------------------------------------------------------------------


class RayGangLauncher(GangLauncher):
    """Runs one training job's gang on Ray Train until it succeeds or fails for good
    (see the module's docstring); the arguments are ``GangLauncher``'s, and:

    Args:
        address: The Ray to use (``Settings.ray_address``); None: Ray already
            initialised in this process, else a local Ray started for the job and shut
            down after it.
    """

    place = "the Ray cluster"

    def __init__(self, *args: Any, address: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.address = address

    def run(self) -> JobResult:
        started = connect(self.address)
        try:
            return super().run()
        finally:
            if started:
                ray.shutdown()

    def capacity(self) -> float:
        return float(ray.cluster_resources().get("CPU", 0.0))  # type: ignore[no-untyped-call]

    def _retryable(self, cause: WorkerExit | None) -> bool:
        # A worker Ray lost (its node, or its Ray process, killed) left no exit code.
        if cause is not None and cause.exit_code is None and cause.error_type is None:
            return True
        return super()._retryable(cause)

    def _attempt(self, number: int, deadline: float | None) -> GangAttempt:
        attempt = GangAttempt(number=number, started_at=datetime.now(UTC))
        folder = self.workdir / f"attempt-{number}"
        folder.mkdir(parents=True, exist_ok=True)
        for stale in (*folder.glob("rank-*.report.json"), *folder.glob("rank-*.exit")):
            stale.unlink()  # a retried task's earlier attempt
        (folder / STOP_FILE).unlink(missing_ok=True)
        trainer = DataParallelTrainer(
            _gang_worker,
            train_loop_config=self._config(folder, number),
            backend_config=_GangBackendConfig(),
            scaling_config=ScalingConfig(
                num_workers=self.spec.workers,
                use_gpu=self.spec.resources.gpu > 0,
                resources_per_worker=self._resources(),
            ),
            run_config=RunConfig(
                name=f"{self.spec.name}-attempt-{number}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}",
                storage_path=str((self.workdir / "ray").resolve()),
                failure_config=FailureConfig(max_failures=0),
            ),
        )
        done: Future[BaseException | None] = Future()

        def fit() -> None:
            try:
                trainer.fit()
                done.set_result(None)
            except BaseException as exc:  # Ray's errors and ours: judged below
                done.set_result(exc)

        threading.Thread(target=fit, name=f"ray-train-{self.spec.name}", daemon=True).start()
        stopped: tuple[GangOutcome, str] | None = None
        while not done.done():
            if stopped is None and self.cancel.is_set():
                stopped = (GangOutcome.CANCELLED, "cancelled")
            elif stopped is None and deadline is not None and time.monotonic() > deadline:
                limit = self.spec.timeout.total_seconds() if self.spec.timeout else 0
                stopped = (GangOutcome.TIMED_OUT, f"stopped after its timeout of {limit:g} s")
            if stopped is not None and not (folder / STOP_FILE).exists():
                (folder / STOP_FILE).touch()
            time.sleep(_POLL_S)
        error = done.result()
        attempt.exits = [self._worker_exit(folder, rank) for rank in range(self.spec.workers)]
        if stopped is not None:
            self._end(attempt, *stopped)
        elif error is None:
            attempt.result = self._report(folder, 0).get("result")
            self._end(attempt, GangOutcome.SUCCEEDED, "every worker finished")
        else:
            self._failed(attempt, error)
        return attempt

    def _failed(self, attempt: GangAttempt, error: BaseException) -> None:
        failed = [(e.rank, e.exit_code) for e in attempt.exits if e.exit_code not in (None, 0)]
        if failed:
            attempt.cause = attempt.exits[root_cause(failed)]
            self._end(attempt, GangOutcome.FAILED, describe_exit(attempt.cause))
            return
        # No worker's process failed: Ray could not run the gang, or lost a worker.
        lost = _lost_rank(error)
        message = f"{type(error).__name__}: {error}".splitlines()[0][:500]
        if lost is None:
            self._end(attempt, GangOutcome.FAILED, f"Ray Train failed: {message}")
            return
        attempt.cause = WorkerExit(rank=lost, exit_code=None, message=message)
        self._end(attempt, GangOutcome.FAILED, f"rank {lost} was lost by Ray: {message}")

    def _worker_exit(self, folder: Path, rank: int) -> WorkerExit:
        report = self._report(folder, rank)
        try:
            code: int | None = int((folder / f"rank-{rank}.exit").read_text())
        except (OSError, ValueError):
            code = None
        return WorkerExit(
            rank=rank,
            exit_code=code,
            error_type=report.get("error_type"),
            message=report.get("message"),
        )

    def _config(self, folder: Path, number: int) -> dict[str, Any]:
        """What every Ray Train worker needs: the local launcher's environment and
        commands, with paths made absolute (Ray runs workers in folders of its own)."""
        env = {
            key: value
            for key, value in os.environ.items()
            if key.startswith(("MODELYARD_", "MLFLOW_"))
        }
        env.update(
            {
                **self.spec.env,
                **self.env,
                "MODELYARD_JOB": self.spec.name,
                "MODELYARD_RESTART_COUNT": str(number - 1),
                "MODELYARD_CHECKPOINT_DIR": str(self.checkpoint_dir.resolve()),
                "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
                "PYTHONUNBUFFERED": "1",
            }
        )
        folder = folder.resolve()
        commands = [self._command(folder, rank)[1:] for rank in range(self.spec.workers)]
        if self.spec.is_script:
            commands = [[str(Path(c[0]).resolve()), *c[1:]] for c in commands]
        else:
            commands = [[*c[:2], _absolute(c[2]), *c[3:]] for c in commands]
        return {
            "folder": str(folder),
            "env": env,
            "commands": commands,
            "cwd": os.getcwd(),
            "threads": str(max(1, int(self.spec.resources.cpu or 1))),
        }

    def _resources(self) -> dict[str, float]:
        resources = {"CPU": float(self.spec.resources.cpu or 1.0)}
        if self.spec.resources.gpu:
            resources["GPU"] = float(self.spec.resources.gpu)
        if self.spec.resources.memory:
            resources["memory"] = float(self.spec.resources.memory)
        return resources


def _absolute(entrypoint: str) -> str:
    module, _, function = entrypoint.rpartition(":")
    if module.endswith(".py"):
        return f"{Path(module).resolve()}:{function}"
    return entrypoint


def _lost_rank(error: BaseException) -> int | None:
    """The rank Ray reports as failed, when its failure is Ray's (not our process's)."""
    failures = getattr(error, "worker_failures", None)
    if isinstance(failures, dict) and failures:
        return int(min(failures))
    return None
