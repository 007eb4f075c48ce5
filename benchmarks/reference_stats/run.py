"""Reference statistics of a 10-million-row Parquet file: one streaming pass vs pandas.

modelyard's ``reference_statistics`` reads the file in record batches and sketches every
column (KLL quantiles and histogram, frequent items and HLL for the string column); the
peer is what a notebook does: ``pd.read_parquet(path).describe(percentiles=...)`` plus
``value_counts()`` of the string column, which loads the whole table and computes exact
figures. Each side runs in a fresh subprocess, the two alternating when repeated;
reported are the wall time of the work (imports excluded), the whole subprocess's wall
time, the peak resident memory (VmHWM) and its growth over the same interpreter after
imports, and the exact rank of modelyard's quantiles (counted by the pandas side, outside
its timing) against their levels.

    .venv/bin/python benchmarks/reference_stats/run.py [--rows 10000000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

console = Console()
CHUNK_ROWS = 1_000_000
PERCENTILES = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99]
CITIES = [f"city-{i:02d}" for i in range(30)]


def write_data(path: Path, rows: int) -> int:
    """Write ``rows`` rows of three numeric and one string column; return their Arrow size."""
    rng = np.random.default_rng(11)
    cities = pa.array(CITIES)
    schema = pa.schema(
        [
            ("amount", pa.float64()),
            ("count", pa.int64()),
            ("score", pa.float32()),
            ("city", pa.string()),
        ]
    )
    arrow_bytes = 0
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, CHUNK_ROWS):
            n = min(CHUNK_ROWS, rows - start)
            chunk = pa.table(
                {
                    "amount": rng.normal(100.0, 15.0, n),
                    "count": rng.integers(0, 1_000, n),
                    "score": pa.array(rng.random(n, np.float32), mask=rng.random(n) < 0.1),
                    "city": pc.take(cities, rng.integers(0, len(CITIES), n)),
                },
                schema=schema,
            )
            writer.write_table(chunk)
            arrow_bytes += chunk.nbytes
    return arrow_bytes


# Both sides print the same report: seconds of work, VmHWM after imports and at the end,
# the quantiles of "amount" at PERCENTILES and the most frequent city.
PRELUDE = """
import json, re, sys, time
from pathlib import Path
def hwm_kib():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1))
path, levels, sketched = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
"""

MODELYARD = (
    PRELUDE
    + """
from modelyard.monitoring.reference import reference_statistics
imported = hwm_kib()
started = time.perf_counter()
stats = reference_statistics(path)
seconds = time.perf_counter() - started
quantiles = stats.features["amount"].quantiles
top = stats.features["city"].frequencies
print(json.dumps({
    "seconds": seconds, "imported_kib": imported, "peak_kib": hwm_kib(),
    "quantiles": [quantiles[level] for level in levels], "top_city": next(iter(top)),
}))
"""
)

PANDAS = (
    PRELUDE
    + """
import pandas as pd
imported = hwm_kib()
started = time.perf_counter()
frame = pd.read_parquet(path)
described = frame.describe(percentiles=levels)
counts = frame["city"].value_counts()
seconds = time.perf_counter() - started
print(json.dumps({
    "seconds": seconds, "imported_kib": imported, "peak_kib": hwm_kib(),
    "quantiles": [float(described.loc[f"{level:.0%}", "amount"]) for level in levels],
    "top_city": str(counts.index[0]),
    # The exact ranks of modelyard's quantiles: the fractions of values below them.
    "ranks": [float((frame["amount"] < value).mean()) for value in sketched],
}))
"""
)


def run_side(code: str, path: Path, sketched: list[float]) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, str(path), json.dumps(PERCENTILES), json.dumps(sketched)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(done.stderr)
    report: dict[str, Any] = json.loads(done.stdout)
    report["process_seconds"] = time.perf_counter() - started
    return report


def median_report(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of the run with the median work time (the others for the record)."""
    ordered = sorted(reports, key=lambda report: float(report["seconds"]))
    chosen = dict(ordered[len(ordered) // 2])
    chosen["all_seconds"] = [round(float(report["seconds"]), 3) for report in reports]
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelyard-refstats-") as folder:
        path = Path(folder) / "features.parquet"
        with console.status(f"writing {args.rows:,} rows"):
            arrow_bytes = write_data(path, args.rows)
        file_bytes = path.stat().st_size
        reports: dict[str, list[dict[str, Any]]] = {"modelyard": [], "pandas": []}
        for _ in range(args.repeats):
            with console.status(f"modelyard: statistics of {args.rows:,} rows"):
                reports["modelyard"].append(run_side(MODELYARD, path, []))
            with console.status(f"pandas: statistics of {args.rows:,} rows"):
                sketched = reports["modelyard"][-1]["quantiles"]
                reports["pandas"].append(run_side(PANDAS, path, sketched))
    ours, peer = median_report(reports["modelyard"]), median_report(reports["pandas"])

    mib = 1024.0
    table = Table(
        title=f"Reference statistics of {args.rows:,} rows "
        f"({arrow_bytes / 2**20:.0f} MiB in Arrow, {file_bytes / 2**20:.0f} MiB Parquet)"
    )
    for column in ("", "modelyard (streaming)", "pandas (whole table)", "ratio"):
        table.add_column(column)

    def row(label: str, mine: float, theirs: float, unit: str, digits: int) -> None:
        table.add_row(
            label,
            f"{mine:.{digits}f} {unit}",
            f"{theirs:.{digits}f} {unit}",
            f"{mine / theirs:.2f}x",
        )

    row("work time", ours["seconds"], peer["seconds"], "s", 2)
    row("process time", ours["process_seconds"], peer["process_seconds"], "s", 2)
    row("peak RSS", ours["peak_kib"] / mib, peer["peak_kib"] / mib, "MiB", 0)
    row(
        "peak RSS - imports",
        (ours["peak_kib"] - ours["imported_kib"]) / mib,
        (peer["peak_kib"] - peer["imported_kib"]) / mib,
        "MiB",
        0,
    )
    row("RSS after imports", ours["imported_kib"] / mib, peer["imported_kib"] / mib, "MiB", 0)
    rank_error = np.abs(np.asarray(peer["ranks"]) - np.asarray(PERCENTILES)).max()
    table.add_row("quantile rank error", f"{rank_error:.4f}", "0 (exact)", "")
    table.add_row("top city", ours["top_city"], peer["top_city"], "")
    console.print(table)
    if args.repeats > 1:
        console.print(
            f"work seconds per repeat: modelyard {ours['all_seconds']}, "
            f"pandas {peer['all_seconds']} (median shown)"
        )
    console.print_json(
        json.dumps({"modelyard": ours, "pandas": peer, "median_of": args.repeats}, default=str)
    )


if __name__ == "__main__":
    main()
