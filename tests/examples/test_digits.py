"""The digits example: DDP over gloo on 2 CPU workers survives a killed worker and ends
in the same accuracy band as an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelyard.cli.main import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRAIN = Path(__file__).resolve().parents[2] / "examples" / "digits" / "train.py"


def _submit(capsys: pytest.CaptureFixture[str], *params: str) -> dict[str, object]:
    args = ["train", "submit", f"{TRAIN}:train", "--workers", "2", "-P", "epochs=6"]
    for param in params:
        args += ["-P", param]
    assert main([*args, "-o", "json"]) == 0
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert isinstance(done, dict)
    return done


def test_a_killed_worker_resumes_from_its_checkpoint_to_the_same_accuracy(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plain = _submit(capsys)
    killed = _submit(capsys, "kill_at_epoch=3")
    assert (plain["attempts"], killed["attempts"]) == (1, 2)
    plain_result, killed_result = plain["result"], killed["result"]
    assert isinstance(plain_result, dict)
    assert isinstance(killed_result, dict)
    assert killed_result["resumed_from"] == 3
    assert plain_result["accuracy"] >= 0.9
    assert abs(killed_result["accuracy"] - plain_result["accuracy"]) <= 0.03
