"""Three tasks passing a large table: make it, transform it, summarise it."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from modelyard.pipelines.pipeline import pipeline
from modelyard.pipelines.task import task

BATCH = 1_000_000


def batches(rows: int, seed: int = 0) -> pa.RecordBatchReader:
    """``rows`` rows in batches of a million: ids, amounts, a category, a flag."""
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("amount", pa.float64()),
            ("category", pa.int32()),
            ("flag", pa.bool_()),
        ]
    )
    generator = np.random.default_rng(seed)

    def produce() -> Iterator[pa.RecordBatch]:
        for start in range(0, rows, BATCH):
            size = min(BATCH, rows - start)
            yield pa.record_batch(
                [
                    pa.array(np.arange(start, start + size, dtype=np.int64)),
                    pa.array(generator.gamma(2.0, 15.0, size)),
                    pa.array(generator.integers(0, 50, size, dtype=np.int32)),
                    pa.array(generator.random(size) < 0.1),
                ],
                schema=schema,
            )

    return pa.RecordBatchReader.from_batches(schema, produce())


def transform_table(table: pa.Table) -> pa.Table:
    """Drop flagged rows and add a taxed amount."""
    kept = table.filter(pc.invert(table["flag"]))
    return kept.append_column("taxed", pc.multiply(kept["amount"], 1.2))


def summarise_table(table: pa.Table) -> dict[str, float]:
    return {
        "rows": table.num_rows,
        "total": float(pc.sum(table["taxed"]).as_py()),
        "categories": int(pc.count_distinct(table["category"]).as_py()),
    }


@task
def make(rows: int) -> pa.RecordBatchReader:
    """Streamed to Parquet batch by batch: the table is never whole in this worker."""
    return batches(rows)


@task
def transform(table: pa.Table) -> pa.Table:
    return transform_table(table)


@task
def summarise(table: pa.Table) -> dict[str, float]:
    return summarise_table(table)


@pipeline
def data_chain(rows: int = 10_000_000) -> None:
    summarise(transform(make(rows)))
