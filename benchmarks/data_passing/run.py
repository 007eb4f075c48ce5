"""Data passing: a 10-million-row table through a 3-task chain.

modelyard runs the chain on its local runtime: every task in a warm worker process,
each table written to the artifact store as Parquet by the task that made it and read
by the next one; the engine passes references only. The peer is the same three steps
as plain functions in one Python process (the notebook), which passes the table in
memory and stores nothing. Reported: wall time, the engine process's memory growth
during the run (sampled), and each task's peak resident memory (measured by the worker
per attempt).

    .venv/bin/python benchmarks/data_passing/run.py [--rows 10000000]
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
console = Console()
MIB = 1024 * 1024


def _rss() -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) * 1024 if match else 0


class RssSampler:
    """The largest resident size of this process while it runs, sampled every 20 ms."""

    def __init__(self) -> None:
        self.baseline = _rss()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss())


def run_modelyard(rows: int) -> dict[str, object]:
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import select

    from benchmarks.data_passing import chain
    from benchmarks.local import bench_engine
    from modelyard.specs.runs import RunState
    from modelyard.store.models import TaskAttempt, TaskRun

    with bench_engine(2) as (engine, project_id):
        sessions = engine.sessions
        spec = chain.data_chain.spec(f"{HERE / 'chain.py'}:data_chain")
        warm = engine.create_run(project_id, spec, {"rows": 10})
        engine.execute(warm)  # workers started, modules imported
        gc.collect()
        run_id = engine.create_run(project_id, spec, {"rows": rows})
        with RssSampler() as sampler:
            started = time.perf_counter()
            state = engine.execute(run_id)
            seconds = time.perf_counter() - started
        if state is not RunState.SUCCEEDED:
            raise SystemExit(f"the benchmark run {run_id} ended {state}")
        with sessions() as session:
            attempts = session.execute(
                select(TaskRun.node_id, TaskAttempt.peak_memory_bytes, TaskRun.output)
                .join(TaskAttempt, TaskAttempt.task_run_id == TaskRun.id)
                .where(TaskRun.run_id == run_id)
                .order_by(TaskAttempt.started_at)
            ).all()
    tasks = {
        node: {
            "peak_mib": (peak or 0) / MIB,
            "output_mib": int((output or {}).get("ref", {}).get("size", 0)) / MIB,
        }
        for node, peak, output in attempts
    }
    return {
        "seconds": seconds,
        "engine_growth_mib": (sampler.peak - sampler.baseline) / MIB,
        "engine_rss_mib": sampler.baseline / MIB,
        "tasks": tasks,
    }


NOTEBOOK = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[2])
from benchmarks.data_passing.chain import batches, summarise_table, transform_table
rows = int(sys.argv[1])
started = time.perf_counter()
table = batches(rows).read_all()
summary = summarise_table(transform_table(table))
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak_mib": peak / 1048576, "summary": summary}))
"""


def run_notebook(rows: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", NOTEBOOK, str(rows), str(ROOT)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    args = parser.parse_args()
    with console.status(f"modelyard: {args.rows:,} rows through 3 tasks"):
        ours = run_modelyard(args.rows)
    with console.status("plain Python in one process"):
        notebook = run_notebook(args.rows)
    table = Table(title=f"{args.rows:,} rows through a 3-task chain")
    for column in ("", "modelyard (local runtime)", "plain Python, one process", "ratio"):
        table.add_column(column)
    seconds = float(ours["seconds"])  # type: ignore[arg-type]
    table.add_row(
        "wall time (s)",
        f"{seconds:.2f}",
        f"{notebook['seconds']:.2f}",
        f"{seconds / notebook['seconds']:.2f}x",
    )
    table.add_row(
        "engine process growth (MiB)",
        f"{ours['engine_growth_mib']:.1f} (of {ours['engine_rss_mib']:.0f})",
        "-",
        "",
    )
    tasks = ours["tasks"]
    assert isinstance(tasks, dict)
    for node, figures in tasks.items():
        table.add_row(
            f"task {node}: peak memory (MiB)",
            f"{figures['peak_mib']:.0f} (output {figures['output_mib']:.0f} MiB Parquet)",
            "",
            "",
        )
    table.add_row("whole process peak (MiB)", "-", f"{notebook['peak_mib']:.0f}", "")
    console.print(table)
    console.print_json(json.dumps({"modelyard": ours, "plain_python": notebook}))


if __name__ == "__main__":
    main()
