"""What the deployment router adds: the same load straight to a model server, through
the router to that one server, and through the router split 90/10 over two servers (a
canary), measured in one run with ``hey``.

    .venv/bin/python benchmarks/serving/router_overhead.py [--seconds 10]

The model and request are those of ``run.py`` (scikit-learn's HistGradientBoosting
classifier on the breast-cancer data, one row of 30 features, MLflow's /invocations).
Every path must answer the model's own predictions before it is measured. The router is
the process the deployment controller runs (``modelyard router``), fed a routes file as
the controller writes it. All processes share the machine's two cores with ``hey``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

# Run as a script, whose folder comes first on sys.path.
from peers import Launch, free_port
from rich.table import Table
from run import (
    FIXED_RATE,
    Figures,
    Model,
    body,
    check,
    console,
    ensure_hey,
    hey,
    infer_path,
    make_model,
    modelyard_launch,
    start,
    stop,
)

from modelyard.serving.router import write_routes

PROTOCOL = "invocations"
CONCURRENCY = 16


@contextmanager
def server(model: Model, folder: Path, name: str) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(modelyard_launch(model.path, port, PROTOCOL), url, folder / f"{name}.log")
    try:
        yield url
    finally:
        stop(process)


@contextmanager
def router(folder: Path, weights: dict[str, int], replicas: dict[str, str]) -> Iterator[str]:
    routes = folder / f"routes-{len(replicas)}.json"
    write_routes(
        routes,
        {
            "deployment": "cancer",
            "generation": 1,
            "weights": weights,
            "variants": {
                name: {"model": "cancer", "version": "1", "replicas": [url]}
                for name, url in replicas.items()
            },
        },
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    launch = Launch(
        label="router",
        command=[
            str(bin_dir / "modelyard"),
            "router",
            "--routes",
            str(routes),
            "--port",
            str(port),
            "--no-log-shadows",
        ],
        ready_path="/v2/health/ready",
        protocol=PROTOCOL,
    )
    process = start(launch, url, folder / f"router-{len(replicas)}.log")
    try:
        yield url
    finally:
        stop(process)


def measure(url: str, load: Path, model: Model, seconds: int) -> tuple[Figures, Figures]:
    check(url, PROTOCOL, model)
    target = f"{url}{infer_path(PROTOCOL)}"
    hey(target, load, 4, 2)  # warm-up
    loaded = hey(target, load, CONCURRENCY, seconds)
    steady = hey(target, load, FIXED_RATE[0], seconds, FIXED_RATE[1])
    return loaded, steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="per measurement")
    args = parser.parse_args()
    ensure_hey()
    folder = Path(tempfile.mkdtemp(prefix="modelyard-router-bench-"))
    model = make_model(folder)
    load = folder / "body.json"
    load.write_text(json.dumps(body(model, PROTOCOL, 0)))
    results: dict[str, tuple[Figures, Figures]] = {}
    with ExitStack() as stack:
        primary = stack.enter_context(server(model, folder, "primary"))
        canary = stack.enter_context(server(model, folder, "canary"))
        with console.status("straight to the server"):
            results["straight to one server"] = measure(primary, load, model, args.seconds)
        with (
            router(folder, {"primary": 100}, {"primary": primary}) as url,
            console.status("through the router, one server"),
        ):
            results["router -> the same server"] = measure(url, load, model, args.seconds)
        split = {"primary": 90, "canary": 10}
        with (
            router(folder, split, {"primary": primary, "canary": canary}) as url,
            console.status("through the router, 90/10"),
        ):
            results["router, 90/10 over two servers"] = measure(url, load, model, args.seconds)
    base = results["straight to one server"][1]
    rate = FIXED_RATE[0] * FIXED_RATE[1]
    out = Table(title=f"router overhead ({args.seconds} s per measurement, 2 cores shared)")
    for column in (
        "path",
        f"req/s at c={CONCURRENCY}",
        f"p50 ms at {rate}/s",
        f"p99 ms at {rate}/s",
        "added p50 ms",
        "added p99 ms",
        "errors",
    ):
        out.add_column(column, justify="left" if column == "path" else "right")
    for path, (loaded, steady) in results.items():
        out.add_row(
            path,
            f"{loaded.rps:,.0f}",
            f"{steady.p50_ms:.1f}",
            f"{steady.p99_ms:.1f}",
            f"{steady.p50_ms - base.p50_ms:+.1f}",
            f"{steady.p99_ms - base.p99_ms:+.1f}",
            str(loaded.errors + steady.errors),
        )
    console.print(out)


if __name__ == "__main__":
    main()
