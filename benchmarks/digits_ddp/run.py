"""Distributed speed-up of the digits example: the same DDP training (gloo, CPU) with 1
and with 2 worker processes on this machine, wall time of the whole job (process
start-up, torch import and process-group set-up included) and the speed-up.

    .venv/bin/python benchmarks/digits_ddp/run.py [--epochs 10] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
console = Console()


def run(workers: int, epochs: int) -> tuple[float, float]:
    """(seconds, test accuracy) of one job."""
    from modelyard.specs.training import TrainingJobSpec
    from modelyard.training.launch import GangLauncher, GangOutcome

    spec = TrainingJobSpec(
        name="digits",
        entrypoint=f"{ROOT / 'examples' / 'digits' / 'train.py'}:train",
        params={"epochs": epochs},
        workers=workers,
    )
    started = time.perf_counter()
    result = GangLauncher(spec, Path(tempfile.mkdtemp(prefix="modelyard-ddp-"))).run()
    seconds = time.perf_counter() - started
    if result.outcome is not GangOutcome.SUCCEEDED:
        raise SystemExit(f"{workers} worker(s): {result.reason}")
    return seconds, float(result.result["accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    figures: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for workers in (1, 2):
            with console.status(f"{workers} worker(s), {args.epochs} epochs"):
                figures[workers].append(run(workers, args.epochs))
    table = Table(title=f"digits, DDP over gloo on CPU, {args.epochs} epochs")
    for column in ("workers", "seconds (median)", "accuracy", "speed-up"):
        table.add_column(column)
    base = statistics.median(s for s, _ in figures[1])
    for workers, runs in figures.items():
        seconds = statistics.median(s for s, _ in runs)
        accuracy = statistics.median(a for _, a in runs)
        table.add_row(str(workers), f"{seconds:.2f}", f"{accuracy:.3f}", f"{base / seconds:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
