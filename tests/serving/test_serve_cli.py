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
