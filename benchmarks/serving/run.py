"""Model-server throughput and latency: modelyard serve against its peers on one model.

The same saved model behind ``modelyard serve``, ``mlflow models serve``, MLServer (its
MLflow runtime, V2 protocol) and Ray Serve (one replica, ``@serve.batch``), one replica
each, each measured alone with the same load generator (``hey``), one row of 30
features per request. The model is the one the peers were first measured with:
scikit-learn's HistGradientBoosting classifier on the bundled breast-cancer data, saved
with MLflow.

    .venv/bin/python benchmarks/serving/run.py [--seconds 10] [--peers mlflow,mlserver,ray]

MLServer and Ray Serve are installed into environments of their own under
``benchmarks/.envs/`` the first time (see ``peers.py``). Every server must answer the
model's own predictions before it is measured; a peer that cannot be installed, started
or checked is reported with the reason and the others still run. ``hey`` comes from
Debian (``apt-get install hey``); the script installs it when it is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

# Run as a script, whose folder comes first on sys.path.
from peers import (
    BATCH_WAIT_SECONDS,
    MAX_BATCH_SIZE,
    Launch,
    PeerFailed,
    free_port,
    installed_versions,
    mlflow_launch,
    mlserver_launch,
    ray_launch,
)
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Wide enough for the table when the output goes to a file.
console = Console(width=None if sys.stdout.isatty() else 150)
CONCURRENCY = (1, 16, 64)
FIXED_RATE = (10, 10)  # hey -c 10 -q 10: 100 requests/s in all
PEERS = ("mlflow", "mlserver", "ray")
CHECKED_ROWS = 8  # rows each server must predict right before it is measured


@dataclass
class Figures:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass
class Model:
    path: Path
    columns: list[str]
    rows: list[list[float]]  # the rows checked; the load sends the first
    expected: list[int]  # the model's own predictions of them


@dataclass
class Result:
    label: str
    protocol: str
    figures: dict[str, Figures] = field(default_factory=dict)
    rss_mib: float = 0.0
    startup_s: float = 0.0
    failure: str | None = None
    versions: dict[str, str] = field(default_factory=dict)


def make_model(folder: Path) -> Model:
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
    # The first row (what the load sends) and rows of both classes, so that a server
    # answering a constant cannot pass.
    picked = [0, *data.target[data.target == 1].index[: CHECKED_ROWS // 2]]
    picked += [i for i in data.target[data.target == 0].index if i not in picked]
    checked = frame.iloc[picked[:CHECKED_ROWS]]
    return Model(
        path=path,
        columns=list(frame.columns),
        rows=checked.to_numpy().tolist(),
        expected=[int(v) for v in model.predict(checked)],
    )


def body(model: Model, protocol: str, row: int) -> dict[str, Any]:
    values = model.rows[row]
    if protocol == "v2":
        inputs = [
            {"name": name, "datatype": "FP64", "shape": [1], "data": [value]}
            for name, value in zip(model.columns, values, strict=True)
        ]
        return {"inputs": inputs}
    return {"dataframe_split": {"index": [0], "columns": model.columns, "data": [values]}}


def infer_path(protocol: str) -> str:
    return "/v2/models/cancer/infer" if protocol == "v2" else "/invocations"


def answer(protocol: str, response: dict[str, Any]) -> int:
    if protocol == "v2":
        return int(response["outputs"][0]["data"][0])
    return int(response["predictions"][0])


def start(launch: Launch, url: str, log: Path) -> subprocess.Popen[bytes]:
    # One OpenMP thread per predict on every side: modelyard's default and what Ray sets
    # per replica; scikit-learn's own default spins both cores between small batches.
    env = {**os.environ, "OMP_NUM_THREADS": "1", **launch.env}
    with log.open("wb") as out:
        server = subprocess.Popen(
            launch.command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=launch.cwd,
            start_new_session=True,  # its own process group, stopped as a whole
        )
    deadline = time.monotonic() + launch.startup_seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}{launch.ready_path}", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise PeerFailed(f"exited with {server.returncode} at start: {last_line(log)}")
        time.sleep(0.5)
    stop(server)
    raise PeerFailed(f"not ready after {launch.startup_seconds:.0f} s: {last_line(log)}")


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip()[:240] if lines else "(no output)"


def check(url: str, protocol: str, model: Model) -> None:
    """Every checked row answered 200 with the model's own prediction."""
    for row, expected in enumerate(model.expected):
        response = httpx.post(f"{url}{infer_path(protocol)}", json=body(model, protocol, row))
        if response.status_code != 200:
            raise PeerFailed(f"answered {response.status_code}: {response.text[:200]}")
        got = answer(protocol, response.json())
        if got != expected:
            raise PeerFailed(f"predicted {got} for row {row}, the model predicts {expected}")


def hey(url: str, body: Path, concurrency: int, seconds: int, rate: int | None = None) -> Figures:
    command = ["hey", "-z", f"{seconds}s", "-c", str(concurrency), "-m", "POST"]
    command += ["-T", "application/json", "-D", str(body)]
    if rate is not None:
        command += ["-q", str(rate)]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"50%+ in ([\d.]+) secs", out)
    # Under 100 answers hey prints no 99th percentile ("0% in"): the slowest is it.
    p99 = re.search(r"99%+ in ([\d.]+) secs", out) or re.search(r"Slowest:\s+([\d.]+)", out)
    if rps is None or p50 is None or p99 is None:
        raise PeerFailed(f"no answers under load: {out.strip()[-200:]}")
    codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", out))
    errors = sum(int(n) for code, n in codes.items() if code != "200")
    # Requests that got no response at all (refused, reset, timed out).
    errors += sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s+(?:Post|Get) ", out, re.M))
    return Figures(
        float(rps.group(1)), float(p50.group(1)) * 1000, float(p99.group(1)) * 1000, errors
    )


def process_tree(pid: int) -> dict[int, str]:
    """The process and its descendants, each with its start time (to tell a reused pid)."""
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            found[current] = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()[19]
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def tree_rss_mib(pid: int) -> float:
    total = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        total += int(match.group(1)) if match else 0
    return total / 1024


def stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server, then SIGKILL to whatever it started that outlived it
    (Ray's agents do)."""
    tree = process_tree(server.pid)
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=10)
    time.sleep(0.5)
    for pid, started in tree.items():
        if process_tree(pid).get(pid) == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def measure(
    key: str, launch: Launch, model: Model, folder: Path, port: int, seconds: int
) -> Result:
    result = Result(launch.label, launch.protocol, versions=launch.versions)
    url = f"http://127.0.0.1:{port}"
    load = folder / f"body-{launch.protocol}.json"
    load.write_text(json.dumps(body(model, launch.protocol, 0)))
    target = f"{url}{infer_path(launch.protocol)}"
    began = time.monotonic()
    with console.status(f"{key}: starting"):
        server = start(launch, url, folder / f"{key}.log")
    result.startup_s = time.monotonic() - began
    try:
        check(url, launch.protocol, model)
        hey(target, load, 4, 2)  # warm-up
        for concurrency in CONCURRENCY:
            with console.status(f"{key}: concurrency {concurrency}"):
                result.figures[f"c{concurrency}"] = hey(target, load, concurrency, seconds)
            if concurrency == CONCURRENCY[-1]:
                result.rss_mib = tree_rss_mib(server.pid)
        with console.status(f"{key}: fixed rate"):
            result.figures["rate"] = hey(target, load, FIXED_RATE[0], seconds, FIXED_RATE[1])
    finally:
        with console.status(f"{key}: stopping"):
            stop(server)
    return result


def modelyard_launch(model: Path, port: int, protocol: str) -> Launch:
    bin_dir = Path(sys.executable).parent
    versions = installed_versions(bin_dir / "python", ["modelyard", "mlflow", "scikit-learn"])
    return Launch(
        label="modelyard serve" + (", V2" if protocol == "v2" else ""),
        command=[str(bin_dir / "modelyard"), "serve", str(model), "--port", str(port)],
        ready_path="/ping",
        protocol=protocol,
        versions=versions,
    )


def say(text: str) -> None:
    console.print(text, markup=False)  # "ray[serve]" is no markup


def ensure_hey() -> None:
    if shutil.which("hey"):
        return
    console.print("installing hey from Debian's packages")
    subprocess.run(["apt-get", "install", "-y", "-qq", "hey"], check=True)


def peer_list(text: str) -> list[str]:
    chosen = [] if text == "none" else [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PEERS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peer(s) {unknown}: choose from {PEERS}")
    return chosen


def print_table(results: dict[str, Result]) -> None:
    table = Table(title="one row of 30 features per request, one replica each, hey")
    table.add_column("server")
    for concurrency in CONCURRENCY:
        table.add_column(f"req/s c={concurrency}", justify="right")
    table.add_column("p50 / p99 c=16", justify="right")
    table.add_column(f"p50 / p99 {FIXED_RATE[0] * FIXED_RATE[1]}/s", justify="right")
    table.add_column("errors", justify="right")
    table.add_column("RSS", justify="right")
    table.add_column("modelyard ÷ it, c=16", justify="right")
    for key, result in results.items():
        if result.failure is not None:
            table.add_row(result.label, "failed", *["-"] * 7)
            continue
        figures = result.figures
        c16, rate = figures["c16"], figures["rate"]
        ours = results["modelyard-v2" if result.protocol == "v2" else "modelyard"]
        ratio = "-"
        if not key.startswith("modelyard") and ours.failure is None:
            ratio = f"{ours.figures['c16'].rps / c16.rps:.1f}x"
        table.add_row(
            result.label,
            *(f"{figures[f'c{c}'].rps:,.0f}" for c in CONCURRENCY),
            f"{c16.p50_ms:.1f} / {c16.p99_ms:.1f} ms",
            f"{rate.p50_ms:.1f} / {rate.p99_ms:.1f} ms",
            str(sum(f.errors for f in figures.values())),
            f"{result.rss_mib:,.0f} MiB",
            ratio,
        )
    console.print(table)
    console.print(
        "Ratios pair each peer with modelyard on the same protocol (V2 for MLServer, "
        "/invocations for the others). RSS: the server and every process it started, "
        "after the c=64 run."
    )
    for key, result in results.items():
        if result.failure is not None:
            console.print(f"[red]{key} failed[/red]: {escape(result.failure)}")
        else:
            pinned = ", ".join(f"{k} {v}" for k, v in result.versions.items())
            console.print(f"{key}: {pinned}; ready in {result.startup_s:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="per measured point")
    parser.add_argument(
        "--peers",
        type=peer_list,
        default=list(PEERS),
        help=f"comma-separated, from {','.join(PEERS)}, or none (default: all)",
    )
    args = parser.parse_args()
    began = time.monotonic()
    load_before = os.getloadavg()[0]
    ensure_hey()
    folder = Path(tempfile.mkdtemp(prefix="modelyard-serving-"))
    model = make_model(folder)
    console.print(
        f"batching: up to {MAX_BATCH_SIZE} rows per predict everywhere; MLServer and Ray "
        f"Serve wait up to {BATCH_WAIT_SECONDS * 1000:g} ms for company, modelyard never "
        "when idle; one OpenMP thread per predict everywhere; logs in "
        f"{folder}"
    )
    plans: list[tuple[str, Callable[[int], Launch]]] = [
        ("modelyard", lambda port: modelyard_launch(model.path, port, "invocations")),
    ]
    if "mlserver" in args.peers:
        plans.append(("modelyard-v2", lambda port: modelyard_launch(model.path, port, "v2")))
    plans += [
        (name, launcher)
        for name, launcher in (
            ("mlflow", lambda port: mlflow_launch(model.path, port)),
            ("mlserver", lambda port: mlserver_launch(model.path, port, folder, say)),
            ("ray", lambda port: ray_launch(model.path, port, say)),
        )
        if name in args.peers
    ]
    results: dict[str, Result] = {}
    for key, launcher in plans:
        port = free_port()
        try:
            launch = launcher(port)
            results[key] = measure(key, launch, model, folder, port, args.seconds)
        except Exception as error:  # a broken peer must not stop the others
            if key.startswith("modelyard"):
                raise
            label = {"mlflow": "mlflow models serve", "mlserver": "MLServer", "ray": "Ray Serve"}
            results[key] = Result(label[key], "-", failure=f"{type(error).__name__}: {error}")
    print_table(results)
    # Anything else running on the 2 cores shows in every figure: say so.
    console.print(
        f"total {time.monotonic() - began:.0f} s; load average (1 min) "
        f"{load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
    )


if __name__ == "__main__":
    main()
