"""Tracking overhead: 10,000 metric points logged from a training loop, through
modelyard's buffered helpers and through plain per-call ``mlflow.log_metric`` (and, for
completeness, MLflow's own asynchronous logging), to the same store, each into a run of
its own in one experiment. The loop itself does nothing, so the time is all logging.

    .venv/bin/python benchmarks/tracking/run.py [--points 10000] [--store sqlite|server]

``sqlite`` is modelyard's embedded default; ``server`` starts ``mlflow server`` on that
same SQLite file and logs over HTTP, as a team sharing a tracking server does.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

console = Console()
METRICS = ("loss", "accuracy")  # two series, as a loop logs them per step


def modelyard_helpers(points: int) -> None:
    from modelyard.training import tracking

    for step in range(points // len(METRICS)):
        tracking.log_metrics({"loss": 1.0 / (step + 1), "accuracy": step / points}, step=step)
    tracking.flush()


def mlflow_per_call(points: int) -> None:
    import mlflow

    for step in range(points // len(METRICS)):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metric("accuracy", step / points, step=step)


def mlflow_async(points: int) -> None:
    import mlflow

    for step in range(points // len(METRICS)):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step, synchronous=False)
        mlflow.log_metric("accuracy", step / points, step=step, synchronous=False)
    mlflow.flush_async_logging()


def measure(name: str, log: Callable[[int], None], points: int) -> float:
    import mlflow

    with mlflow.start_run(run_name=name) as run:
        started = time.perf_counter()
        log(points)
        seconds = time.perf_counter() - started
    logged = sum(
        len(mlflow.MlflowClient().get_metric_history(run.info.run_id, key)) for key in METRICS
    )
    if logged != points:
        raise SystemExit(f"{name}: {logged} points stored, not {points}")
    return seconds


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--workers",
            "1",
            "--default-artifact-root",
            str(folder / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("mlflow server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--store", choices=("sqlite", "server"), default="sqlite")
    args = parser.parse_args()
    import mlflow

    folder = Path(tempfile.mkdtemp(prefix="modelyard-tracking-"))
    server = None
    if args.store == "server":
        server, uri = start_server(folder)
    else:
        uri = f"sqlite:///{folder / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("tracking-overhead")
    try:
        figures = {}
        for name, log in (
            ("modelyard helpers (batched)", modelyard_helpers),
            ("mlflow.log_metric per call", mlflow_per_call),
            ("mlflow.log_metric synchronous=False", mlflow_async),
        ):
            with console.status(f"{name}: {args.points:,} points"):
                figures[name] = measure(name, log, args.points)
    finally:
        if server is not None:
            server.terminate()
            server.wait()
    base = figures["modelyard helpers (batched)"]
    table = Table(title=f"{args.points:,} metric points, one run each, store: {args.store}")
    for column in ("how", "seconds", "µs per point", "vs modelyard"):
        table.add_column(column)
    for name, seconds in figures.items():
        table.add_row(
            name, f"{seconds:.2f}", f"{seconds / args.points * 1e6:,.0f}", f"{seconds / base:.1f}x"
        )
    console.print(table)


if __name__ == "__main__":
    main()
