"""``modelyard train`` on this machine: a gang run to its end, its attempts and logs."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from modelyard.cli.main import main
from modelyard.errors import ExitCode
from tests.output import last_json

pytestmark = pytest.mark.integration

T = "tests.training.targets"


def test_a_two_worker_job_survives_a_killed_worker(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "submit", f"{T}:count_with_checkpoints", "--workers", "2"]
    assert main([*args, "-P", "steps=5", "-P", "kill_at=2", "-o", "json"]) == 0
    done = last_json(capsys)
    assert done["state"] == "succeeded"
    assert done["attempts"] == 2
    assert done["result"] == {"resumed_from": 2, "total": 10.0, "restarts": 1}
    job_id = str(done["job_id"])
    assert main(["train", "status", job_id, "-o", "json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "succeeded"
    assert [(a["outcome"], a["retried"]) for a in status["attempts"]] == [
        ("failed", True),
        ("succeeded", False),
    ]
    assert status["attempts"][0]["reason"] == "rank 1 was killed by SIGKILL (out of memory?)"
    assert main(["train", "status", job_id]) == 0
    assert "restart" in capsys.readouterr().out
    assert main(["train", "list", "-o", "json"]) == 0
    assert [j["id"] for j in json.loads(capsys.readouterr().out)["items"]] == [job_id]
    assert main(["train", "list", "-p", "nowhere", "-o", "json"]) != 0  # the project counts
    assert "project/not_found" in capsys.readouterr().err


def test_a_failing_script_fails_the_job_and_its_logs_show_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "train.py"
    script.write_text("import sys\nprint('epoch 1 of', sys.argv[2])\nsys.exit(4)\n")
    args = ["train", "submit", str(script), "--arg", "--epochs", "--arg", "7", "-o", "json"]
    assert main(args) == 1
    failed = last_json(capsys)
    assert (failed["state"], failed["reason"]) == ("failed", "rank 0 exited with code 4")
    assert main(["train", "logs", str(failed["job_id"])]) == 0
    shown = capsys.readouterr().out
    assert "attempt-1 · rank-0" in shown
    assert "epoch 1 of 7" in shown


def test_an_entrypoint_that_does_not_exist_is_a_clear_failure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["train", "submit", "no_such_module:train", "-o", "json"]) == 1
    failed = last_json(capsys)
    assert failed["reason"] == (
        "rank 0 raised builtins.ModuleNotFoundError: No module named 'no_such_module'"
    )


def test_a_running_job_is_cancelled_from_another_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    codes: list[int] = []
    submitter = threading.Thread(
        target=lambda: codes.append(
            main(["train", "submit", f"{T}:hang", "-P", "seconds=60", "-o", "json"])
        )
    )
    submitter.start()
    deadline = time.monotonic() + 30
    job_id = None
    while job_id is None:
        assert time.monotonic() < deadline, "the job never appeared"
        time.sleep(0.2)
        if main(["train", "list", "-o", "json"]) == 0:
            listed = json.loads(capsys.readouterr().out)["items"]
            job_id = listed[0]["id"] if listed and listed[0]["state"] == "running" else None
    assert main(["train", "cancel", job_id]) == 0
    submitter.join(timeout=30)
    assert codes == [1]
    capsys.readouterr()
    assert main(["train", "status", job_id, "-o", "json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["state"], status["reason"]) == ("cancelled", "cancelled")
    assert main(["train", "cancel", job_id]) == 0
    assert "has ended" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train", "submit", "nothing"], "neither 'module:function' nor a script"),
        (["train", "submit", "m:f", "--workers", "0"], "greater than or equal to 1"),
        (["train", "submit", "m:f", "--secret", "NOPE"], "needs secret(s) ['NOPE']"),
    ],
)
def test_bad_jobs_are_refused_before_anything_runs(
    capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    assert main(args) == ExitCode.USAGE
    assert fragment in capsys.readouterr().err


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        (["-P", "x=abc", "-P", "y=1", "-P", "kind=good"], "x: Input should be a valid number"),
        (["-P", "x=1", "-P", "kind=good"], "missing a required argument: 'y'"),
        (["-P", "x=1", "-P", "y=1", "-P", "kind=good", "-P", "z=2"], "unexpected keyword"),
    ],
)
def test_parameters_that_do_not_fit_the_function_fail_the_job_clearly(
    capsys: pytest.CaptureFixture[str], params: list[str], fragment: str
) -> None:
    assert main(["train", "submit", f"{T}:quadratic", *params, "-o", "json"]) == 1
    failed = last_json(capsys)
    assert failed["attempts"] == 1  # a mistake in the job, never retried
    assert "rank 0 raised modelyard.errors.InvalidInputError: parameters do not fit" in str(
        failed["reason"]
    )
    assert fragment in str(failed["reason"])
