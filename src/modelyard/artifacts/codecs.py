"""How values become bytes: canonical JSON, deterministic Parquet, directory manifests.

Determinism is the point: equal values must give equal bytes, hence equal digests, so the
store deduplicates them and a rerun of a pipeline step can recognise its own output.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import PurePosixPath
from typing import Any, Literal, Protocol

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelyard.artifacts.refs import Digest
from modelyard.errors import InvalidInputError

ROW_GROUP_ROWS = 128 * 1024
"""Rows per Parquet row group. Part of the byte format: changing it changes table digests.

A fixed row count (not a byte size) keeps the row-group boundaries independent of how the
input happened to be chunked; it also bounds the memory ``put_table`` holds at once.
"""

PARQUET_OPTIONS: dict[str, Any] = {
    # Pinned rather than left to pyarrow's defaults, so the bytes only change when the
    # Parquet library itself does. Parquet files carry no timestamps.
    "version": "2.6",
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "data_page_version": "1.0",
    "store_schema": True,  # keeps Arrow types (time zones, dictionaries) on read
    "write_page_index": False,
}

MANIFEST_FORMAT: Literal["modelyard.directory/v1"] = "modelyard.directory/v1"


class Sink(Protocol):
    """The writable surface pyarrow needs (a :class:`~modelyard.artifacts.spool.Spool`)."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...
    def tell(self) -> int: ...
    def flush(self) -> None: ...


def canonical_json(value: object) -> bytes:
    """``value`` as canonical JSON: sorted keys, no whitespace, UTF-8, no NaN/Infinity.

    Raises:
        InvalidInputError: ``artifact/unsupported_type`` naming the first value JSON cannot
            represent, or ``artifact/invalid_json`` for NaN, infinities, mixed key types
            or circular references.
    """

    def refuse(obj: object) -> object:
        raise InvalidInputError(
            f"cannot store a value of type {type(obj).__qualname__} as JSON; convert it to "
            "dict, list, str, int, float, bool or None first",
            code="artifact/unsupported_type",
            details={"type": type(obj).__qualname__},
        )

    try:
        text = json.dumps(
            value,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            default=refuse,
        )
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"cannot store the value as JSON: {exc}", code="artifact/invalid_json"
        ) from exc
    return text.encode("utf-8")


# ---- tables ---------------------------------------------------------------------------


def table_stream(data: object) -> tuple[Any, Iterator[Any]]:
    """The Arrow schema of ``data`` and an iterator over its record batches, lazily.

    Accepts a ``pyarrow.Table``, ``RecordBatch`` or ``RecordBatchReader``, an iterable of
    ``RecordBatch``, a pandas ``DataFrame`` (its index is dropped), a DuckDB relation, or
    any object exporting an Arrow C stream (``__arrow_c_stream__``, e.g. polars).

    Raises:
        InvalidInputError: ``artifact/unsupported_type`` naming the type of ``data`` (or of
            an iterable's first non-batch item); ``artifact/invalid_table`` for an empty
            iterable, whose schema cannot be known.
    """
    if isinstance(data, pa.Table):
        return data.schema, iter(data.to_batches())
    if isinstance(data, pa.RecordBatch):
        return data.schema, iter([data])
    if isinstance(data, pa.RecordBatchReader):
        return data.schema, iter(data)
    if _is_duckdb_relation(data):
        reader = _duckdb_reader(data)
        return reader.schema, iter(reader)
    if _is_pandas_frame(data):
        return _pandas_stream(data)
    if hasattr(data, "__arrow_c_stream__"):
        reader = pa.RecordBatchReader.from_stream(data)
        return reader.schema, iter(reader)
    if isinstance(data, Iterable) and not isinstance(data, str | bytes | bytearray | Mapping):
        return _batches_stream(data)
    raise _unsupported(data)


def _unsupported(data: object) -> InvalidInputError:
    name = f"{type(data).__module__}.{type(data).__qualname__}"
    return InvalidInputError(
        f"cannot store a {name} as a table; pass a pyarrow Table, RecordBatchReader, an "
        "iterable of RecordBatch, a pandas DataFrame or a DuckDB relation",
        code="artifact/unsupported_type",
        details={"type": name},
    )


_EMPTY = object()


def _batches_stream(data: Iterable[object]) -> tuple[Any, Iterator[Any]]:
    items = iter(data)
    first = next(items, _EMPTY)
    if first is _EMPTY:
        raise InvalidInputError(
            "cannot store an empty iterable of batches: its schema is unknown; pass an "
            "empty pyarrow Table instead",
            code="artifact/invalid_table",
        )

    def checked() -> Iterator[Any]:
        for batch in itertools.chain([first], items):
            if not isinstance(batch, pa.RecordBatch):
                raise _unsupported(batch)
            yield batch

    if not isinstance(first, pa.RecordBatch):
        raise _unsupported(first)
    return first.schema, checked()


def _is_duckdb_relation(data: object) -> bool:
    import duckdb  # deferred: only needed when a relation is actually passed

    return isinstance(data, duckdb.DuckDBPyRelation)


def _duckdb_reader(relation: Any) -> Any:
    # duckdb >= 1.4 names it to_arrow_reader and deprecates fetch_record_batch.
    if hasattr(relation, "to_arrow_reader"):
        return relation.to_arrow_reader(ROW_GROUP_ROWS)
    return relation.fetch_record_batch(ROW_GROUP_ROWS)


def _is_pandas_frame(data: object) -> bool:
    # Only ask pandas if the caller could have made a DataFrame, i.e. pandas is loaded.
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(data, pandas.DataFrame)


def _pandas_stream(frame: Any) -> tuple[Any, Iterator[Any]]:
    # The schema is inferred from the whole frame once, then converted slice by slice so
    # a large frame is not copied whole. pandas' own schema metadata is dropped so the same
    # data gives the same digest whether it came from pandas, DuckDB or Arrow.
    schema = pa.Schema.from_pandas(frame, preserve_index=False).remove_metadata()

    def batches() -> Iterator[Any]:
        for start in range(0, len(frame), ROW_GROUP_ROWS):
            part = frame.iloc[start : start + ROW_GROUP_ROWS]
            yield pa.RecordBatch.from_pandas(part, schema=schema, preserve_index=False)

    return schema, batches()


def write_parquet(schema: Any, batches: Iterator[Any], sink: Sink) -> int:
    """Write ``batches`` to ``sink`` as deterministic Parquet; return the number of rows.

    Batches are regrouped into row groups of exactly :data:`ROW_GROUP_ROWS` rows, each
    made contiguous, so the bytes depend on the data and schema only, not on how the
    input was chunked. At most one row group is held in memory.

    Raises:
        InvalidInputError: ``artifact/invalid_table`` when a batch's schema differs from
            the first one's.
    """
    rows = 0
    pending: list[Any] = []
    pending_rows = 0
    with pq.ParquetWriter(sink, schema, **PARQUET_OPTIONS) as writer:
        for batch in batches:
            pending.append(_conform(batch, schema))
            pending_rows += batch.num_rows
            while pending_rows >= ROW_GROUP_ROWS:
                table = pa.Table.from_batches(pending, schema=schema)
                _write_group(writer, table.slice(0, ROW_GROUP_ROWS))
                rest = table.slice(ROW_GROUP_ROWS)
                pending, pending_rows = rest.to_batches(), rest.num_rows
                rows += ROW_GROUP_ROWS
        if pending_rows:
            _write_group(writer, pa.Table.from_batches(pending, schema=schema))
            rows += pending_rows
    return rows


def _conform(batch: Any, schema: Any) -> Any:
    if batch.schema.equals(schema, check_metadata=True):
        return batch
    if not batch.schema.equals(schema):
        raise InvalidInputError(
            f"all batches of a table must share one schema; expected\n{schema}\ngot\n"
            f"{batch.schema}",
            code="artifact/invalid_table",
        )
    return pa.RecordBatch.from_arrays(batch.columns, schema=schema)  # metadata only differs


def _write_group(writer: Any, table: Any) -> None:
    # Contiguous columns: Parquet page boundaries depend on Arrow chunk boundaries.
    writer.write_table(table.combine_chunks(), row_group_size=ROW_GROUP_ROWS)


def table_metadata(schema: Any, num_rows: int) -> dict[str, str]:
    """The ``metadata`` of a table ref: row and column counts and the schema as text."""
    return {
        "format": "parquet",
        "num_rows": str(num_rows),
        "num_columns": str(len(schema)),
        "schema": schema.to_string(show_field_metadata=False, show_schema_metadata=False),
    }


# ---- directories ------------------------------------------------------------------------


class ManifestEntry(BaseModel):
    """One file of a directory artifact."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    digest: Digest
    size: int = Field(ge=0)


class DirectoryManifest(BaseModel):
    """The content of a ``directory`` artifact: relative POSIX path -> file object."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["modelyard.directory/v1"] = MANIFEST_FORMAT
    files: dict[str, ManifestEntry]

    @field_validator("files")
    @classmethod
    def _relative_paths(cls, files: dict[str, ManifestEntry]) -> dict[str, ManifestEntry]:
        # A manifest is data read back from storage: never let it write outside `dest`.
        for name in files:
            path = PurePosixPath(name)
            if (
                not name
                or path.is_absolute()
                or path.as_posix() != name
                or any(part in ("", ".", "..") for part in name.split("/"))
                or "\\" in name
                or "\0" in name
            ):
                raise ValueError(f"not a safe relative path: {name!r}")
        return files

    def encode(self) -> bytes:
        """Canonical JSON bytes, so equal trees give equal digests."""
        return canonical_json(self.model_dump(mode="json"))
