"""Batch prediction: a model over Parquet, streamed in record batches, in bounded memory.

Input is a Parquet file or a folder of them, read file by file and batch by batch; each
chunk's predictions are written, next to the chunk's columns, as one Parquet part in the
output folder (written to a temporary name, then renamed: never a half-written part).
The model's name, version and URI are in every part's schema metadata and in the
``_SUCCESS`` manifest written last. A chunk whose prediction raises is retried; a chunk
that still fails stops the job with an error naming it. Nothing is ever skipped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from modelyard.errors import InvalidInputError, ModelyardError
from modelyard.serving.models import ServedModel

logger = logging.getLogger(__name__)

PREDICTION = "prediction"
MANIFEST = "_SUCCESS"


class ChunkFailedError(ModelyardError):
    """A chunk's prediction failed on every try."""

    default_code = "predict/chunk_failed"


@dataclass(frozen=True)
class BatchResult:
    rows: int
    parts: int
    retries: int
    seconds: float
    output: Path


def parquet_files(source: Path) -> list[Path]:
    """The Parquet files of a file or a folder (sorted, so parts follow a fixed order)."""
    if source.is_file():
        return [source]
    if source.is_dir():
        files = sorted(p for p in source.rglob("*.parquet") if p.is_file())
        if files:
            return files
    raise InvalidInputError(
        f"{source} is neither a Parquet file nor a folder with Parquet files",
        code="predict/no_input",
    )


def chunks(files: list[Path], batch_size: int, columns: list[str] | None) -> Iterator[pa.Table]:
    """The input in tables of at most ``batch_size`` rows, one file at a time."""
    for file in files:
        parquet = pq.ParquetFile(file)
        if columns is not None:
            missing = [c for c in columns if c not in parquet.schema_arrow.names]
            if missing:
                raise InvalidInputError(
                    f"{file} has no column(s) {missing}, which the model needs",
                    code="predict/missing_column",
                    details={"file": str(file), "missing": missing},
                )
        for batch in parquet.iter_batches(batch_size=batch_size):
            yield pa.Table.from_batches([batch])


def predict_parquet(
    model: ServedModel,
    source: Path,
    output: Path,
    *,
    batch_size: int = 10_000,
    retries: int = 2,
    on_chunk: Callable[[int], None] | None = None,
) -> BatchResult:
    """Predict every row of ``source`` and write the predictions to ``output``.

    Raises:
        InvalidInputError: no input, or an input without a column the model needs.
        ChunkFailedError: a chunk failed ``retries + 1`` times; the parts written before
            it stay, and there is no ``_SUCCESS`` manifest.
    """
    if batch_size < 1:
        raise InvalidInputError("batch size must be at least 1", code="predict/invalid")
    started = time.monotonic()
    output.mkdir(parents=True, exist_ok=True)
    (output / MANIFEST).unlink(missing_ok=True)
    metadata = {
        b"modelyard.model": model.name.encode(),
        b"modelyard.model_version": model.version.encode(),
        b"modelyard.model_uri": model.uri.encode(),
    }
    rows = parts = retried = 0
    for index, chunk in enumerate(chunks(parquet_files(source), batch_size, model.columns)):
        predictions, tries = _predict_chunk(model, chunk, index, retries)
        retried += tries
        table = chunk.append_column(PREDICTION, pa.array(np.asarray(predictions).tolist()))
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
        part = output / f"part-{index:05d}.parquet"
        temporary = part.with_suffix(".parquet.tmp")
        pq.write_table(table, temporary)
        temporary.replace(part)
        rows += chunk.num_rows
        parts += 1
        if on_chunk is not None:
            on_chunk(chunk.num_rows)
    manifest = {
        "model": model.name,
        "version": model.version,
        "uri": model.uri,
        "rows": rows,
        "parts": parts,
        "retries": retried,
    }
    (output / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return BatchResult(rows, parts, retried, time.monotonic() - started, output)


def _predict_chunk(
    model: ServedModel, chunk: pa.Table, index: int, retries: int
) -> tuple[Any, int]:
    """A chunk's predictions and how many retries they took."""
    for attempt in range(retries + 1):
        try:
            predictions = model.predict_batch(_rows(model, chunk))
            if len(predictions) != chunk.num_rows:
                raise ValueError(
                    f"the model returned {len(predictions)} predictions for {chunk.num_rows} rows"
                )
            return predictions, attempt
        except Exception as exc:
            if attempt == retries:
                raise ChunkFailedError(
                    f"chunk {index} ({chunk.num_rows} rows) failed {retries + 1} time(s): "
                    f"{type(exc).__name__}: {exc}",
                    details={"chunk": index, "rows": chunk.num_rows},
                ) from exc
            logger.warning("chunk %d failed (%s); trying again", index, exc)
    raise AssertionError("unreachable")


def _rows(model: ServedModel, chunk: pa.Table) -> Any:
    """A chunk as the model's batch: its signature's columns, in order, as a numpy array
    for the native path or a DataFrame for pyfunc."""
    if model.columns:
        selected = chunk.select(model.columns)
        if model.flavor != "pyfunc":
            return np.column_stack([c.to_numpy(zero_copy_only=False) for c in selected.columns])
        return selected.to_pandas()
    return chunk.to_pandas()


def predict_table(
    model: ServedModel, table: pa.Table, batch_size: int = 10_000, retries: int = 2
) -> pa.Table:
    """``table`` with a ``prediction`` column, predicted chunk by chunk (each retried as
    in :func:`predict_parquet`), the model's name and version in the schema metadata."""
    parts = []
    for index, chunk in enumerate(table.to_batches(max_chunksize=batch_size)):
        chunk_table = pa.Table.from_batches([chunk])
        predictions, _ = _predict_chunk(model, chunk_table, index, retries)
        parts.append(np.asarray(predictions))
    values = np.concatenate(parts) if parts else np.array([])
    result = table.append_column(PREDICTION, pa.array(values.tolist()))
    return result.replace_schema_metadata(
        {
            **(result.schema.metadata or {}),
            b"modelyard.model": model.name.encode(),
            b"modelyard.model_version": model.version.encode(),
        }
    )
