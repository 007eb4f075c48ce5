"""``modelyard controllers``: the controllers without the API, as the platform's
controllers Deployment runs them, serving their metrics and stopping cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from modelyard.cli.main import main

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_controllers_run_alone_serve_metrics_and_stop_on_sigterm(tmp_path: Path) -> None:
    Path(os.environ["MODELYARD_HOME"]).mkdir(parents=True, exist_ok=True)
    assert main(["db", "upgrade"]) == 0
    port = _free_port()
    command = [str(Path(sys.executable).with_name("modelyard")), "controllers"]
    log = tmp_path / "controllers.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*command, "--metrics-port", str(port)],
            env={**os.environ, "MODELYARD_WORKERS": "1"},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        body = ""
        while "modelyard_queue_depth" not in body:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.TransportError:
                time.sleep(0.2)
        assert "modelyard_task_runs_total" in body
        assert "modelyard_http_requests_total" not in body  # no API in this process

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "controllers stopped" in log.read_text()
