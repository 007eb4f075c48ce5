"""``modelyard serve`` as a process: serves, reports readiness, and on SIGTERM stops
taking traffic but finishes what is in flight, then exits 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest

from modelyard.cli.serve import parse_memory_budget
from modelyard.errors import InvalidInputError
from tests.serving.slow_model import Slow

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_sigterm_drains_in_flight_requests_then_exits_cleanly(tmp_path: Path) -> None:
    example = pd.DataFrame({"x": [1.0]})
    mlflow.pyfunc.save_model(
        tmp_path / "slow", python_model=Slow(), input_example=example, pip_requirements=["mlflow"]
    )
    port = _port()
    url = f"http://127.0.0.1:{port}"
    modelyard = Path(sys.executable).parent / "modelyard"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [str(modelyard), "serve", str(tmp_path / "slow"), "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError("the server never became ready")
        assert httpx.post(f"{url}/invocations", json={"inputs": {"x": [0.5]}}).json() == {
            "predictions": [1.0]
        }
        answers: list[httpx.Response] = []
        slow = threading.Thread(
            target=lambda: answers.append(
                httpx.post(f"{url}/invocations", json={"inputs": {"x": [2.5]}}, timeout=30)
            )
        )
        slow.start()
        time.sleep(0.8)  # the slow request is in the model now
        server.send_signal(signal.SIGTERM)
        slow.join(timeout=30)
        assert len(answers) == 1
        assert answers[0].status_code == 200  # finished, not cut off
        assert answers[0].json() == {"predictions": [5.0]}
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2GiB", 2 * 2**30),
        ("500MB", 500 * 10**6),
        ("1.5 GB", 1_500_000_000),
        ("2Gi", 2 * 2**30),  # as Kubernetes writes it
        ("512mi", 512 * 2**20),
        ("1048576", 1_048_576),
    ],
)
def test_memory_budgets_are_read_as_people_write_them(text: str, expected: int) -> None:
    assert parse_memory_budget(text) == expected


@pytest.mark.parametrize("text", ["lots", "0", "-1GB", "2 parsecs", ""])
def test_a_memory_budget_that_is_not_a_size_is_refused(text: str) -> None:
    with pytest.raises(InvalidInputError, match="is not a size") as refused:
        parse_memory_budget(text)
    assert refused.value.code == "serve/memory_budget"


def test_serve_stops_with_a_clear_error_when_a_model_cannot_fit_the_budget(
    tmp_path: Path,
) -> None:
    mlflow.pyfunc.save_model(
        tmp_path / "slow",
        python_model=Slow(),
        input_example=pd.DataFrame({"x": [1.0]}),
        pip_requirements=["mlflow"],
    )
    modelyard = Path(sys.executable).parent / "modelyard"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    finished = subprocess.run(
        [str(modelyard), "serve", str(tmp_path / "slow"), "--memory-budget", "1KB"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 1, finished.stdout + finished.stderr
    output = " ".join((finished.stdout + finished.stderr).split())
    assert "model/memory_budget" in output
    assert "the memory budget of 1000 B" in output
