"""serve and predict: the model server for one or more MLflow models (no metadata
database), and batch prediction over Parquet."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
import uvicorn

from modelyard.cli.output import OutputFormat, OutputOption, console, emit_message
from modelyard.config import Settings
from modelyard.errors import InvalidInputError
from modelyard.monitoring.metrics import ServingMetrics
from modelyard.serving.app import ModelServer, create_server_app
from modelyard.serving.models import Batching, ServedModel, load_model
from modelyard.serving.payloads import PayloadLogger
from modelyard.training.tracking import TrackingConfig, require_mlflow


class _DrainingServer(uvicorn.Server):
    """uvicorn, whose first SIGTERM/SIGINT also marks the models not ready, so health
    checks take the replica out of traffic while in-flight requests finish."""

    def __init__(self, config: uvicorn.Config, models: ModelServer) -> None:
        super().__init__(config)
        self.models = models

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.models.draining = True
        super().handle_exit(sig, frame)


def serve(
    model_uris: Annotated[
        list[str],
        typer.Argument(
            metavar="MODEL_URI...",
            help="models:/name@alias, models:/name/3, runs:/<run>/model or a model folder",
        ),
    ],
    host: Annotated[str, typer.Option(help="Loopback unless you mean to share it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8080,
    max_batch_size: Annotated[
        int, typer.Option(min=1, help="Rows merged into one predict call (1: no batching).")
    ] = 64,
    max_latency_ms: Annotated[
        float,
        typer.Option(
            min=0,
            help="The longest a request waits for company. 0: batches form from what queues "
            "while the model predicts, so an idle server answers at once.",
        ),
    ] = 0.0,
    max_request_bytes: Annotated[int, typer.Option(min=1024)] = 32 * 1024 * 1024,
    graceful_seconds: Annotated[float, typer.Option(min=0)] = 20.0,
    model_threads: Annotated[
        int,
        typer.Option(
            min=1,
            help="OpenMP/BLAS threads of a predict call. 1 leaves the cores to the request "
            "loop: threads that spin between small batches starve it.",
        ),
    ] = 1,
    log_payloads: Annotated[
        float,
        typer.Option(
            min=0,
            max=1,
            help="The fraction of requests whose inputs and outputs are written to Parquet "
            "in the artifact store (payloads/<model>/date=...), in the background.",
        ),
    ] = 0.0,
) -> None:
    """Serve models over the Open Inference Protocol (V2), MLflow's /invocations and
    plain JSON; ready once every model is loaded and warmed up."""
    require_mlflow()
    # Before any OpenMP runtime loads (its threads' wait policy is read once), and for
    # runtimes already loaded.
    os.environ.setdefault("OMP_NUM_THREADS", str(model_threads))
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    threadpool_limits(limits=model_threads)
    settings = Settings()
    metrics = ServingMetrics()
    batching = Batching(max_batch_size=max_batch_size, max_latency_ms=max_latency_ms)
    tracking_uri = TrackingConfig.from_settings(settings).tracking_uri
    models: list[ServedModel] = []
    for uri in model_uris:
        with console.status(f"loading {uri}"):
            model = load_model(
                uri,
                tracking_uri=tracking_uri,
                batching=batching,
                on_batch=lambda name, rows: metrics.batch_size.labels(name).observe(rows),
            )
        if any(m.name == model.name for m in models):
            raise InvalidInputError(
                f"two models would be served as {model.name!r}", code="serve/duplicate_name"
            )
        console.print(
            f"[green]✓[/green] {model.name} version {model.version} ({model.flavor}, "
            f"{len(model.inputs)} input(s))"
        )
        models.append(model)
    payloads = (
        PayloadLogger(settings.resolved_artifacts_url, sample=log_payloads)
        if log_payloads > 0
        else None
    )
    server = ModelServer(
        models,
        deployment=os.environ.get("MODELYARD_DEPLOYMENT", "standalone"),
        max_request_bytes=max_request_bytes,
        metrics=metrics,
        payloads=payloads,
    )
    config = uvicorn.Config(
        create_server_app(server),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(graceful_seconds),
    )
    console.print(f"serving on http://{host}:{port} (V2: /v2/models/<name>/infer)")
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal; this
    # handler turns that into a clean exit 0, which is what a graceful stop is.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        _DrainingServer(config, server).run()
    finally:
        if payloads is not None:
            payloads.close()  # what is queued is written before the process ends


def predict(
    model_uri: Annotated[str, typer.Argument(help="models:/name@alias, runs:/..., a folder")],
    input_path: Annotated[
        Path, typer.Option("--input", "-i", help="A Parquet file or a folder of them.")
    ],
    output_path: Annotated[Path, typer.Option("--output", "-O", help="The output folder.")],
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per chunk.")] = 10_000,
    retries: Annotated[int, typer.Option(min=0, help="Tries again per failed chunk.")] = 2,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Predict every row of a Parquet input in chunks, in bounded memory; write Parquet
    parts with the model version recorded, and a _SUCCESS manifest last."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from modelyard.serving.batch import parquet_files, predict_parquet

    require_mlflow()
    settings = Settings()
    with console.status(f"loading {model_uri}"):
        model = load_model(
            model_uri,
            tracking_uri=TrackingConfig.from_settings(settings).tracking_uri,
            batching=Batching(max_batch_size=1),
        )
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    total = sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(input_path))
    with Progress(
        TextColumn("[bold]predicting"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        disable=output is not OutputFormat.table,
    ) as progress:
        bar = progress.add_task("rows", total=total)
        result = predict_parquet(
            model,
            input_path,
            output_path,
            batch_size=batch_size,
            retries=retries,
            on_chunk=lambda rows: progress.update(bar, advance=rows),
        )
    emit_message(
        f"{result.rows:,} rows predicted by {model.name} version {model.version} in "
        f"{result.seconds:.1f} s: {result.parts} part(s) in {result.output}",
        output,
        rows=result.rows,
        parts=result.parts,
        retries=result.retries,
        model=model.name,
        version=model.version,
        output=str(result.output),
    )
