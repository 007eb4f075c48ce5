"""Dispatch overhead: 500 no-op tasks as a wide fan-out and as a long chain.

modelyard runs them on its local runtime (warm worker processes, every state persisted
in the embedded SQLite store, every output written to the artifact store); Prefect 3
runs the same shapes in its own environment (in-process threads, ephemeral server on
SQLite), in the same run on the same machine. Worker and server start-up are excluded
on both sides by a warm-up flow.

    .venv/bin/python benchmarks/dispatch/run.py [--tasks 500] [--workers 2] [--no-prefect]
        [--runtime local|ray]

With ``--runtime ray`` modelyard's tasks are Ray tasks on a local Ray (started by the
warm-up, so its start-up is excluded too).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
PREFECT_ENV = HERE.parent / ".venv-prefect"
PREFECT_PINS = ("prefect==3.8.8", "fastapi==0.150.0")  # 3.8.8 needs this fastapi to start

console = Console()


def run_modelyard(tasks: int, workers: int, runtime: str) -> dict[str, float]:
    os.environ["BENCH_TASKS"] = str(tasks)
    sys.path.insert(0, str(HERE.parent.parent))
    from benchmarks.dispatch import dags
    from benchmarks.local import bench_engine

    timings: dict[str, float] = {}
    with bench_engine(workers) as (engine, project_id):
        # Warm-up: start the workers and import the task module in them.
        warm = engine.create_run(
            project_id, dags.warm_up.spec("dags.py:warm_up"), {}, runtime=runtime
        )
        engine.execute(warm)
        for shape in (dags.fan_out, dags.chain):
            spec = shape.spec(f"benchmarks/dispatch/dags.py:{shape.name}")
            started = time.perf_counter()
            run_id = engine.create_run(project_id, spec, {}, runtime=runtime)
            state = engine.execute(run_id)
            timings[shape.name] = time.perf_counter() - started
            if state != "succeeded":
                raise SystemExit(f"modelyard {shape.name} run ended {state}")
    return timings


def ensure_prefect() -> Path:
    python = PREFECT_ENV / "bin" / "python"
    if not python.exists():
        with console.status("creating Prefect's own environment (once)"):
            subprocess.run([sys.executable, "-m", "venv", str(PREFECT_ENV)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", "uv"], check=True)
            subprocess.run(
                [
                    str(PREFECT_ENV / "bin" / "uv"),
                    "pip",
                    "install",
                    "-q",
                    "--python",
                    str(python),
                    *PREFECT_PINS,
                ],
                check=True,
            )
    return python


def run_prefect(tasks: int) -> dict[str, float | str]:
    python = ensure_prefect()
    home = tempfile.mkdtemp(prefix="prefect-bench-")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        "PREFECT_HOME": home,
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "BENCH_TASKS": str(tasks),
    }
    result = subprocess.run(
        [str(python), str(HERE / "prefect_dags.py")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    value: dict[str, float | str] = json.loads(result.stdout.strip().splitlines()[-1])
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-prefect", action="store_true")
    parser.add_argument("--runtime", choices=("local", "ray"), default="local")
    args = parser.parse_args()

    with console.status(f"modelyard ({args.runtime}): {args.tasks} tasks, fan-out then chain"):
        ours = run_modelyard(args.tasks, args.workers, args.runtime)
    theirs: dict[str, float | str] = {}
    if not args.no_prefect:
        with console.status(f"Prefect: {args.tasks} tasks, fan-out then chain"):
            theirs = run_prefect(args.tasks)

    table = Table(title=f"dispatch overhead, {args.tasks} no-op tasks (ms per task)")
    ours_name = f"modelyard ({args.runtime})"
    for column in ("shape", ours_name, f"Prefect {theirs.get('version', '-')}", "ratio"):
        table.add_column(column, justify="right")
    for shape in ("fan_out", "chain"):
        mine = ours[shape] / args.tasks * 1000
        other = theirs.get(shape)
        if isinstance(other, float):
            peer = other / args.tasks * 1000
            ratio = f"{peer / mine:.2f}x faster" if peer >= mine else f"{mine / peer:.2f}x slower"
            table.add_row(shape, f"{mine:.2f}", f"{peer:.2f}", ratio)
        else:
            table.add_row(shape, f"{mine:.2f}", "-", "-")
    console.print(table)
    console.print(
        "modelyard: process isolation, persisted states, outputs in the artifact store; "
        "Prefect: in-process threads, no isolation."
    )


if __name__ == "__main__":
    main()
