"""Training gangs on Ray Train, written once and run by every launcher: the same user
code wires up and all-reduces, a killed worker's gang resumes from its checkpoint, the
failure policy decides as on this machine."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from modelyard.cli.main import main
from modelyard.config import Settings
from modelyard.runtimes.ray.train import RayGangLauncher
from modelyard.specs.training import FailurePolicy, TrainingJobSpec
from modelyard.store.db import session_factory, transaction
from modelyard.store.models import Project
from modelyard.training import jobs
from modelyard.training.executor import JobExecutor
from modelyard.training.launch import GangLauncher, GangOutcome

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T = "tests.training.targets"
Launcher = Callable[..., GangLauncher]


@pytest.fixture(params=["local", "ray"])
def launcher(request: pytest.FixtureRequest) -> Launcher:
    """Each launcher; Ray Train on the session's local Ray."""
    if request.param == "ray":
        request.getfixturevalue("ray_runtime")
        return RayGangLauncher
    return GangLauncher


def job(entrypoint: str, **fields: object) -> TrainingJobSpec:
    fields.setdefault("failure_policy", FailurePolicy(backoff=timedelta(0)))
    return TrainingJobSpec.model_validate({"name": "t", "entrypoint": entrypoint, **fields})


def test_two_gloo_workers_all_reduce(launcher: Launcher, tmp_path: Path) -> None:
    result = launcher(job(f"{T}:all_reduce", workers=2), tmp_path).run()
    assert result.outcome is GangOutcome.SUCCEEDED, result.reason
    wiring = result.result
    assert isinstance(wiring, dict)
    assert wiring["sum"] == 3.0  # ranks 0 and 1 contributed 1 + 2
    assert wiring["world"] == 2
    assert (wiring["WORLD_SIZE"], wiring["RANK"], wiring["LOCAL_RANK"]) == ("2", "0", "0")
    assert wiring["LOCAL_WORLD_SIZE"] == "2"
    assert [e.exit_code for e in result.attempts[0].exits] == [0, 0]
    for rank in (0, 1):  # each rank's output in its own log, as `train logs` reads it
        assert (tmp_path / "attempt-1" / f"rank-{rank}.log").is_file()


def test_a_killed_worker_restarts_the_gang_from_its_checkpoint(
    launcher: Launcher, tmp_path: Path
) -> None:
    spec = job(f"{T}:count_with_checkpoints", workers=2, params={"steps": 6, "kill_at": 3})
    result = launcher(spec, tmp_path).run()
    assert result.outcome is GangOutcome.SUCCEEDED, result.reason
    first, second = result.attempts
    assert first.retried
    assert first.reason == "rank 1 was killed by SIGKILL (out of memory?)"
    assert second.outcome is GangOutcome.SUCCEEDED
    # Steps 0-2 were checkpointed before the kill; the restart resumed after them and
    # counted every step exactly once (2 workers x 6 steps).
    assert result.result == {"resumed_from": 3, "total": 12.0, "restarts": 1}
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-0000000004.pt", "checkpoint-0000000005.pt"]


def test_a_failing_entrypoint_fails_the_job_with_its_error(
    launcher: Launcher, tmp_path: Path
) -> None:
    bug = launcher(job(f"{T}:fail", params={"message": "bad column"}), tmp_path / "a").run()
    assert bug.outcome is GangOutcome.FAILED
    assert len(bug.attempts) == 1  # a bug is not retried
    assert bug.reason == "rank 0 raised builtins.ValueError: bad column"
    assert bug.attempts[0].exits[0].exit_code == 1

    policy = FailurePolicy(
        retry_on_exceptions=("ValueError",), backoff_limit=1, backoff=timedelta(0)
    )
    spec = job(f"{T}:fail", params={"message": "flaky"}, failure_policy=policy)
    retried = launcher(spec, tmp_path / "b").run()
    assert retried.outcome is GangOutcome.FAILED
    assert [a.retried for a in retried.attempts] == [True, False]
    assert retried.reason.endswith("backoff limit of 1 reached")


def test_a_hanging_job_is_stopped_at_its_timeout(launcher: Launcher, tmp_path: Path) -> None:
    spec = job(f"{T}:hang", params={"seconds": 120}, timeout=timedelta(seconds=3))
    result = launcher(spec, tmp_path).run()
    assert result.outcome is GangOutcome.TIMED_OUT
    assert result.reason == "stopped after its timeout of 3 s"
    assert len(result.attempts) == 1


def test_the_command_runs_a_job_on_ray_train(
    ray_runtime: object, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "submit", f"{T}:all_reduce", "--workers", "2", "--runtime", "ray"]
    assert main([*args, "-o", "json"]) == 0
    done = json.loads(capsys.readouterr().out)  # Ray printed nothing to stdout
    assert done["state"] == "succeeded"
    assert done["result"]["sum"] == 3.0
    assert main(["train", "status", done["job_id"], "-o", "json"]) == 0
    detail = json.loads(capsys.readouterr().out)
    assert [a["outcome"] for a in detail["attempts"]] == ["succeeded"]
    assert main(["train", "logs", done["job_id"], "--rank", "1"]) == 0
    assert "attempt-1 · rank-1" in capsys.readouterr().out


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_the_executor_runs_a_job_on_the_runtime_its_spec_names(
    ray_runtime: object, engine: Engine, tmp_path: Path
) -> None:
    """A job queued through the API names its runtime; the job executor of `modelyard
    up` runs it there (here: Ray Train on the session's Ray)."""
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        project = Project(name="ml")
        session.add(project)
        session.flush()
        spec = job(f"{T}:all_reduce", workers=2, runtime="ray")
        job_id = jobs.submit(session, project.id, spec, tmp_path / "jobs", "ana").id
    executor = JobExecutor(sessions, lambda _p, _n: {}, poll_seconds=0.1, settings=Settings())
    executor.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with sessions() as session:
                done = jobs.find(session, job_id)
                if done.state not in (jobs.QUEUED, jobs.RUNNING):
                    break
            time.sleep(0.2)
    finally:
        executor.stop()
    assert done.state == "succeeded", done.reason
    assert done.result["sum"] == 3.0
    assert (Path(done.workdir) / "ray").is_dir()  # Ray Train's storage: it ran there
