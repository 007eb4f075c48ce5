"""Training gangs on this machine: torch's env wiring, all-or-none start, restart from
the latest checkpoint after a killed worker, and the failure policy's decisions."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from modelyard.specs.training import FailurePolicy, TrainingJobSpec
from modelyard.training.launch import GangLauncher, GangOutcome, local_capacity

pytestmark = pytest.mark.integration

T = "tests.training.targets"


def job(entrypoint: str, **fields: object) -> TrainingJobSpec:
    fields.setdefault("failure_policy", FailurePolicy(backoff=timedelta(0)))
    return TrainingJobSpec.model_validate({"name": "t", "entrypoint": entrypoint, **fields})


def test_two_workers_are_wired_like_a_pytorchjob_and_all_reduce(tmp_path: Path) -> None:
    result = GangLauncher(job(f"{T}:all_reduce", workers=2), tmp_path).run()
    assert result.outcome is GangOutcome.SUCCEEDED, result.reason
    assert result.result == {
        "sum": 3.0,  # 1 + 2: both ranks took part
        "world": 2,
        "WORLD_SIZE": "2",
        "RANK": "0",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "LOCAL_WORLD_SIZE": "2",
        # Each worker's share of the cores, as torchrun sets it (unless already set).
        "OMP_NUM_THREADS": os.environ.get(
            "OMP_NUM_THREADS", str(max(1, int(local_capacity() / 2)))
        ),
    }
    assert [e.exit_code for e in result.attempts[0].exits] == [0, 0]


def test_a_killed_worker_restarts_the_gang_from_the_latest_checkpoint(tmp_path: Path) -> None:
    spec = job(f"{T}:count_with_checkpoints", workers=2, params={"steps": 6, "kill_at": 3})
    seen = []
    result = GangLauncher(spec, tmp_path, on_attempt=seen.append).run()
    assert result.outcome is GangOutcome.SUCCEEDED, result.reason
    first, second = result.attempts
    assert seen == [first, second]
    assert first.outcome is GangOutcome.FAILED
    assert first.retried
    assert first.cause is not None
    assert (first.cause.rank, first.cause.exit_code) == (1, -9)
    assert first.reason == "rank 1 was killed by SIGKILL (out of memory?)"
    # Steps 0-2 were checkpointed before the kill; the restart resumed after them and
    # the total counts every step exactly once (2 workers x 6 steps).
    assert result.result == {"resumed_from": 3, "total": 12.0, "restarts": 1}
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-0000000004.pt", "checkpoint-0000000005.pt"]


def test_a_bug_fails_the_job_at_once_and_listed_exceptions_are_retried(tmp_path: Path) -> None:
    bug = GangLauncher(job(f"{T}:fail", params={"message": "bad column"}), tmp_path / "a").run()
    assert bug.outcome is GangOutcome.FAILED
    assert len(bug.attempts) == 1
    assert bug.reason == "rank 0 raised builtins.ValueError: bad column"

    policy = FailurePolicy(
        retry_on_exceptions=("ValueError",), backoff_limit=2, backoff=timedelta(0)
    )
    spec = job(f"{T}:fail", params={"message": "flaky"}, failure_policy=policy)
    retried = GangLauncher(spec, tmp_path / "b").run()
    assert retried.outcome is GangOutcome.FAILED
    assert len(retried.attempts) == 3
    assert retried.reason.endswith("backoff limit of 2 reached")
    assert [a.retried for a in retried.attempts] == [True, True, False]


def test_a_script_exit_code_is_retried_only_when_listed(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        "import os, sys\nsys.exit(3 if os.environ['MODELYARD_RESTART_COUNT'] == '0' else 0)\n"
    )
    plain = GangLauncher(job(str(script), args=("--epochs", "1")), tmp_path / "a").run()
    assert plain.outcome is GangOutcome.FAILED
    assert plain.reason == "rank 0 exited with code 3"
    policy = FailurePolicy(retry_on_exit_codes=(3,), backoff=timedelta(0))
    listed = GangLauncher(job(str(script), failure_policy=policy), tmp_path / "b").run()
    assert listed.outcome is GangOutcome.SUCCEEDED
    assert len(listed.attempts) == 2


def test_more_workers_than_the_machine_holds_start_none(tmp_path: Path) -> None:
    result = GangLauncher(job(f"{T}:all_reduce", workers=local_capacity() + 1), tmp_path).run()
    assert result.outcome is GangOutcome.NOT_STARTED
    assert "do not fit on this machine" in result.reason
    assert not any(tmp_path.glob("attempt-*"))


def test_a_hanging_job_is_stopped_at_its_timeout(tmp_path: Path) -> None:
    spec = job(f"{T}:hang", params={"seconds": 60}, timeout=timedelta(seconds=1))
    result = GangLauncher(spec, tmp_path).run()
    assert result.outcome is GangOutcome.TIMED_OUT
    assert result.attempts[0].exits[0].exit_code == -15  # stopped with SIGTERM


def test_each_rank_writes_its_own_log(tmp_path: Path) -> None:
    script = tmp_path / "hello.py"
    script.write_text("import os\nprint('hello from rank', os.environ['RANK'])\n")
    result = GangLauncher(job(str(script), workers=2), tmp_path / "job").run()
    assert result.outcome is GangOutcome.SUCCEEDED
    for rank in (0, 1):
        log = (tmp_path / "job" / "attempt-1" / f"rank-{rank}.log").read_text()
        assert f"hello from rank {rank}" in log
    assert os.environ.get("RANK") is None  # nothing leaked into this process


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"entrypoint": "no_function_here"}, "neither 'module:function' nor a script"),
        ({"entrypoint": "train.py", "params": {"a": 1}}, "params are for function"),
        ({"entrypoint": "m:f", "args": ["--x"]}, "args are for script"),
        ({"entrypoint": "m:f", "workers": 0}, "greater than or equal to 1"),
    ],
)
def test_bad_job_specs_are_refused(fields: dict[str, object], words: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=words):
        TrainingJobSpec.model_validate({"name": "t", **fields})


def test_parameters_are_converted_to_the_functions_annotations() -> None:
    from modelyard.errors import InvalidInputError
    from modelyard.training.worker import checked_params

    def train(run: str, epochs: int, rate: float = 0.1) -> None: ...

    assert checked_params(train, "t:train", {"run": 2024, "epochs": "5"}) == {
        "run": "2024",
        "epochs": 5,
    }
    with pytest.raises(InvalidInputError, match="epochs: Input should be a valid integer"):
        checked_params(train, "t:train", {"run": "a", "epochs": "five"})


def test_a_workers_report_of_its_exception_fits_a_termination_message(tmp_path: Path) -> None:
    """On Kubernetes the report is the pod's termination message, cut at 4 KB: however
    long the traceback and however wide the message, it stays whole JSON."""
    import json

    from modelyard.training.worker import main

    # 80 frames of distinct functions: a traceback far longer than 4 KB.
    calls = "".join(f"def f{n}():\n    f{n + 1}()\n" for n in range(80))
    (tmp_path / "deep.py").write_text(
        calls + "def f80():\n    raise ValueError('é' * 100)\ndef main():\n    f0()\n"
    )
    report = tmp_path / "report.json"
    assert main([f"{tmp_path / 'deep.py'}:main", "{}", str(report)]) == 1
    assert len(report.read_bytes()) <= 4096
    parsed = json.loads(report.read_text())
    assert parsed["error_type"] == "builtins.ValueError"
    assert parsed["message"].startswith("éé")
    assert parsed["traceback"].rstrip().endswith("ValueError: " + "é" * 100)
    assert "in f79" in parsed["traceback"]  # its tail, not its head
    assert "in f1\n" not in parsed["traceback"]
