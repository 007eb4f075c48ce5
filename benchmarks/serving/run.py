"""Model-server throughput and latency: the same model behind ``modelyard serve`` and
``mlflow models serve``, one replica each, the same load generator (``hey``), MLflow's
``/invocations`` format with one row per request.

The model is the one the peers were measured with: scikit-learn's HistGradientBoosting
classifier on the bundled breast-cancer data, saved with MLflow.

    .venv/bin/python benchmarks/serving/run.py [--seconds 10] [--no-mlflow]

``hey`` comes from Debian (``apt-get install hey``); the script installs it when it is
missing and it may. Each server runs alone while it is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

console = Console()
CONCURRENCY = (1, 16, 64)
FIXED_RATE = (10, 10)  # hey -c 10 -q 10: 100 requests/s in all


@dataclass
class Figures:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def make_model(folder: Path) -> Path:
    import mlflow
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import HistGradientBoostingClassifier

    from modelyard.training.registry import own_types

    data = load_breast_cancer(as_frame=True)
    frame = data.frame.drop(columns="target")
    model = HistGradientBoostingClassifier().fit(frame, data.target)
    path = folder / "cancer"
    mlflow.sklearn.save_model(
        model,
        path,
        input_example=frame.head(2),
        signature=mlflow.models.infer_signature(frame, model.predict(frame)),
        skops_trusted_types=own_types(model),
    )
    body = {"dataframe_split": frame.head(1).to_dict(orient="split")}
    (folder / "body.json").write_text(json.dumps(body))
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start(command: list[str], url: str) -> subprocess.Popen[bytes]:
    # The servers' own tools (mlflow runs `uvicorn` by name) come from this environment.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise SystemExit(f"{command[:4]} exited with {server.returncode}")
        time.sleep(0.5)
    server.kill()
    raise SystemExit(f"{command[:4]} did not become ready")


def hey(url: str, body: Path, concurrency: int, seconds: int, rate: int | None = None) -> Figures:
    command = ["hey", "-z", f"{seconds}s", "-c", str(concurrency), "-m", "POST"]
    command += ["-T", "application/json", "-D", str(body)]
    if rate is not None:
        command += ["-q", str(rate)]
    out = subprocess.run(
        [*command, f"{url}/invocations"], capture_output=True, text=True, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = float(re.search(r"50%+ in ([\d.]+) secs", out).group(1))  # type: ignore[union-attr]
    p99 = float(re.search(r"99%+ in ([\d.]+) secs", out).group(1))  # type: ignore[union-attr]
    codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", out))
    errors = sum(int(n) for code, n in codes.items() if code != "200")
    return Figures(rps, p50 * 1000, p99 * 1000, errors)


def ensure_hey() -> None:
    if shutil.which("hey"):
        return
    console.print("installing hey from Debian's packages")
    subprocess.run(["apt-get", "install", "-y", "-qq", "hey"], check=True)


def measure(
    name: str, command: list[str], url: str, body: Path, seconds: int
) -> dict[str, Figures]:
    server = start(command, url)
    figures: dict[str, Figures] = {}
    try:
        hey(url, body, 4, 2)  # warm-up
        for concurrency in CONCURRENCY:
            with console.status(f"{name}: concurrency {concurrency}"):
                figures[f"c{concurrency}"] = hey(url, body, concurrency, seconds)
        with console.status(f"{name}: fixed rate"):
            figures["rate"] = hey(url, body, FIXED_RATE[0], seconds, rate=FIXED_RATE[1])
    finally:
        server.terminate()
        server.wait(timeout=30)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--no-mlflow", action="store_true")
    args = parser.parse_args()
    ensure_hey()
    folder = Path(tempfile.mkdtemp(prefix="modelyard-serving-"))
    model = make_model(folder)
    body = folder / "body.json"
    bin_dir = Path(sys.executable).parent
    results: dict[str, dict[str, Figures]] = {}
    port = free_port()
    results["modelyard serve"] = measure(
        "modelyard",
        [str(bin_dir / "modelyard"), "serve", str(model), "--port", str(port)],
        f"http://127.0.0.1:{port}",
        body,
        args.seconds,
    )
    if not args.no_mlflow:
        port = free_port()
        results["mlflow models serve"] = measure(
            "mlflow",
            [
                str(bin_dir / "mlflow"),
                "models",
                "serve",
                "-m",
                str(model),
                "-p",
                str(port),
                "--env-manager",
                "local",
            ],
            f"http://127.0.0.1:{port}",
            body,
            args.seconds,
        )
    table = Table(title="one row per request, /invocations, one replica, hey")
    table.add_column("server")
    for concurrency in CONCURRENCY:
        table.add_column(f"req/s at c={concurrency}", justify="right")
    table.add_column("p50 / p99 at c=16", justify="right")
    table.add_column("p50 / p99 at 100 req/s", justify="right")
    table.add_column("errors", justify="right")
    for name, figures in results.items():
        c16, rate = figures["c16"], figures["rate"]
        table.add_row(
            name,
            *(f"{figures[f'c{c}'].rps:,.0f}" for c in CONCURRENCY),
            f"{c16.p50_ms:.1f} / {c16.p99_ms:.1f} ms",
            f"{rate.p50_ms:.1f} / {rate.p99_ms:.1f} ms",
            str(sum(f.errors for f in figures.values())),
        )
    console.print(table)
    if "mlflow models serve" in results:
        ours, theirs = results["modelyard serve"], results["mlflow models serve"]
        for concurrency in CONCURRENCY:
            key = f"c{concurrency}"
            console.print(
                f"c={concurrency}: modelyard {ours[key].rps / theirs[key].rps:.1f}x "
                "mlflow's throughput"
            )


if __name__ == "__main__":
    main()
