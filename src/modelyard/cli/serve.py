"""serve and predict: the model server for one or more MLflow models (no metadata
database), and batch prediction over Parquet."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
import uvicorn
from pydantic import ByteSize, TypeAdapter, ValidationError

from modelyard.cli.output import OutputFormat, OutputOption, console, emit_message
from modelyard.config import Settings
from modelyard.errors import InvalidInputError
from modelyard.monitoring.metrics import ServingMetrics
from modelyard.serving.app import ModelServer, create_server_app
from modelyard.serving.models import (
    Batching,
    LoadOptions,
    load_model,
    model_name,
)
from modelyard.serving.payloads import PayloadLogger
from modelyard.serving.repository import (
    ModelRepository,
)
from modelyard.training.tracking import TrackingConfig, require_mlflow


class _DrainingServer(uvicorn.Server):
    """uvicorn, whose first SIGTERM/SIGINT also marks the models not ready, so health
    checks take the replica out of traffic while in-flight requests finish. The models
    are loaded first, on the loop that will serve them."""

    def __init__(
        self, config: uvicorn.Config, models: ModelServer, preload: Callable[[], Awaitable[None]]
    ) -> None:
        super().__init__(config)
        self.models = models
        self.preload = preload

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        await self.preload()
        # What is loaded by now (libraries, models) lives as long as the process: out of
        # the collector's sight, a full collection no longer walks it mid-request.
        gc.collect()
        gc.freeze()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.models.draining = True
        super().handle_exit(sig, frame)


_KUBERNETES_UNIT = re.compile(r"^(.*\d\s*[KMGTPE])i$", re.IGNORECASE)


def parse_memory_budget(text: str) -> int:
    """Bytes from ``2GiB``, ``500MB``, ``1.5 GB``, ``2Gi`` (Kubernetes) or a number.

    Raises:
        InvalidInputError: not a positive size.
    """
    kubernetes = _KUBERNETES_UNIT.match(text.strip())
    try:
        value = int(
            TypeAdapter(ByteSize).validate_python(kubernetes[1] + "iB" if kubernetes else text)
        )
    except ValidationError:
        value = 0
    if value <= 0:
        raise InvalidInputError(
            f"--memory-budget {text!r} is not a size: say e.g. 2GiB, 500MB or 1048576",
            code="serve/memory_budget",
        )
    return value


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
    memory_budget: Annotated[
        str | None,
        typer.Option(
            help="Memory the loaded models may take together (2GiB, 500MB, bytes). A load "
            "that would not fit unloads the longest-idle models without requests in "
            "flight; they load again on their next request. Default: no budget.",
        ),
    ] = None,
) -> None:
    """Serve models over the Open Inference Protocol (V2), MLflow's /invocations and
    plain JSON; ready once every model is loaded and warmed up. More models are loaded
    and unloaded at run time through V2's model repository extension
    (POST /v2/repository/models/<name>/load with {"parameters": {"uri": ...}})."""
    from modelyard.monitoring.logging import configure_logging

    require_mlflow()
    budget = parse_memory_budget(memory_budget) if memory_budget is not None else None
    # Before any OpenMP runtime loads (its threads' wait policy is read once), and for
    # runtimes already loaded.
    os.environ.setdefault("OMP_NUM_THREADS", str(model_threads))
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    threadpool_limits(limits=model_threads)
    settings = Settings()
    configure_logging(settings.log_level, json_output=settings.log_json)
    metrics = ServingMetrics()
    batching = Batching(max_batch_size=max_batch_size, max_latency_ms=max_latency_ms)
    tracking_uri = TrackingConfig.from_settings(settings).tracking_uri
    repository = ModelRepository(
        LoadOptions(
            tracking_uri,
            batching,
            on_batch=lambda name, rows: metrics.batch_size.labels(name).observe(rows),
        ),
        memory_budget=budget,
        metrics=metrics,
    )

    async def preload() -> None:
        for uri in model_uris:
            # A deployment's replica serves its one model under the deployment's name.
            name = os.environ.get("MODELYARD_MODEL_NAME", "") if len(model_uris) == 1 else ""
            if not name:
                name = await asyncio.to_thread(model_name, uri, tracking_uri)
            if name in repository.entries:
                raise InvalidInputError(
                    f"two models would be served as {name!r}", code="serve/duplicate_name"
                )
            with console.status(f"loading {uri}"):
                model = await repository.load(name, uri)
            memory = ByteSize(model.memory_bytes).human_readable(separator=" ")
            console.print(
                f"[green]✓[/green] {model.name} version {model.version} ({model.flavor}, "
                f"{len(model.inputs)} input(s), about {memory})"
            )
        unloaded = [e.name for e in repository.index() if e.model is None]
        if unloaded:
            console.print(
                f"unloaded to fit the memory budget: {', '.join(unloaded)} (loaded again on "
                "their next request)"
            )
        console.print(f"serving on http://{host}:{port} (V2: /v2/models/<name>/infer)")

    payloads = (
        PayloadLogger(settings.resolved_artifacts_url, sample=log_payloads)
        if log_payloads > 0
        else None
    )
    server = ModelServer(
        deployment=os.environ.get("MODELYARD_DEPLOYMENT", "standalone"),
        max_request_bytes=max_request_bytes,
        metrics=metrics,
        payloads=payloads,
        repository=repository,
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
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal; this
    # handler turns that into a clean exit 0, which is what a graceful stop is.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        _DrainingServer(config, server, preload).run()
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
