"""Reference statistics of training features, computed in one streaming pass.

A model version's reference statistics describe the data it was trained on, so that the
data it later serves can be compared with it (drift). They are computed in a single pass
over record batches with Apache DataSketches, so memory stays bounded however many rows
there are: a KLL sketch per numeric feature (quantiles and histogram), a frequent-items
sketch and an HLL sketch per categorical feature (top values and distinct count). Counts,
null counts, minimum and maximum are exact; mean and standard deviation are exact up to
floating-point rounding (per-batch moments merged with Chan's formula); quantiles and
histogram counts are within ``rank_error`` (normalized rank, 99% confidence) of exact;
top-value frequencies and distinct counts are exact for up to a few thousand distinct
values and estimates beyond. The sketches are randomised: two passes over more than a few
thousand rows may differ slightly, within those bounds.

Which columns are features of which kind:

- numeric: Arrow integer, floating-point and decimal columns, read as float64. NaN counts
  as missing (with nulls, in ``null_count``); infinities are counted in
  ``infinite_count`` and left out of every other figure.
- categorical: string (plain, large, view), boolean and dictionary-encoded columns, whose
  values are compared as text (``"true"``/``"false"`` for booleans).
- skipped (listed in ``ReferenceStatistics.skipped`` with their Arrow type): everything
  else, including timestamps, dates, times and durations. A timestamp in training data is
  always older than the one in served data, so its drift says nothing about the model;
  derive the features that matter (age, hour of day) and they are numeric.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.dataset as ds  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from datasketches import (
    frequent_items_error_type,
    frequent_strings_sketch,
    hll_sketch,
    kll_doubles_sketch,
)
from pydantic import Field

from modelyard.errors import InvalidInputError
from modelyard.specs.common import Spec

QUANTILE_LEVELS: tuple[float, ...] = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
"""The levels of ``NumericStats.quantiles``; 0 and 1 are the exact minimum and maximum."""

BATCH_ROWS = 1 << 17
"""The most rows handled at once: larger batches are sliced (without copying)."""

MAX_BINS = 10_000
MAX_CATEGORIES = 10_000

_KLL_K = 1000  # normalized rank error about 0.36% for histograms, 0.28% for one quantile
_HLL_LG_K = 14  # relative standard error about 0.8%
_NUL_STANDIN = "\ufffd"  # the metadata store cannot hold NUL characters in text


class Histogram(Spec):
    """Counts of values in equal-width bins: bin ``i`` holds ``edges[i] <= x < edges[i+1]``,
    the last bin also its upper edge (as ``numpy.histogram``). A feature with a single
    distinct value has one bin, ``[value, value]``."""

    edges: list[float]
    counts: list[int]


class NumericStats(Spec):
    """Statistics of a numeric feature. Figures of its values are ``None`` when it has no
    finite value."""

    kind: Literal["numeric"] = "numeric"
    arrow_type: str
    count: int = Field(description="rows, nulls included")
    null_count: int = Field(description="nulls and NaN")
    null_rate: float | None = Field(description="null_count / count; None without rows")
    infinite_count: int = Field(description="+/-inf, left out of the figures below")
    min: float | None
    max: float | None
    mean: float | None
    std: float | None = Field(description="sample standard deviation (n - 1); None below 2")
    quantiles: dict[float, float] | None = Field(description="level -> value, QUANTILE_LEVELS")
    histogram: Histogram | None


class CategoricalStats(Spec):
    """Statistics of a categorical feature; fractions are of its non-null values."""

    kind: Literal["categorical"] = "categorical"
    arrow_type: str
    count: int = Field(description="rows, nulls included")
    null_count: int
    null_rate: float | None = Field(description="null_count / count; None without rows")
    distinct_count: int = Field(description="approximate number of distinct non-null values")
    frequencies: dict[str, float] = Field(description="the most frequent values, most first")
    other_fraction: float | None = Field(
        description="the fraction of every other value; None without non-null values"
    )


FeatureStats = Annotated[NumericStats | CategoricalStats, Field(discriminator="kind")]


class ReferenceStatistics(Spec):
    """The reference statistics of a data set, by feature."""

    rows: int
    features: dict[str, FeatureStats]
    skipped: dict[str, str] = Field(description="columns of unsupported types -> Arrow type")
    rank_error: float = Field(
        description="bound on the normalized rank error of quantiles and histogram counts"
    )


def reference_statistics(
    source: pa.Table | pa.RecordBatchReader | str | os.PathLike[str],
    *,
    features: Sequence[str] | None = None,
    bins: int = 20,
    max_categories: int = 50,
) -> ReferenceStatistics:
    """Compute the reference statistics of ``source`` in one pass over its record batches.

    Args:
        source: A ``pyarrow.Table``, a ``pyarrow.RecordBatchReader`` (consumed), or the path
            of a Parquet file or of a folder of Parquet files with the same columns (read
            in batches, never whole; partition keys in folder names are not read).
        features: The columns to describe, in that order; default every column. A plain
            string is taken as one column name.
        bins: Histogram bins per numeric feature, 1 to ``MAX_BINS``.
        max_categories: Most frequent values reported per categorical feature, 1 to
            ``MAX_CATEGORIES``.

    Returns:
        The statistics; columns whose type is not supported are listed in ``skipped``.

    Raises:
        InvalidInputError: ``reference/unknown_feature`` when a feature is not a column
            of ``source``; ``reference/invalid_argument`` when ``bins`` or
            ``max_categories`` is out of range; ``reference/unreadable_source`` when a
            path does not exist or holds no readable Parquet.
    """
    _check_range("bins", bins, MAX_BINS)
    _check_range("max_categories", max_categories, MAX_CATEGORIES)
    table = _Source(source)
    wanted = _resolve_features(table.schema, features)
    accumulators: dict[str, _NumericAccumulator | _CategoricalAccumulator] = {}
    skipped: dict[str, str] = {}
    for name in wanted:
        data_type = table.schema.field(name).type
        kind = _kind_of(data_type)
        if kind == "numeric":
            accumulators[name] = _NumericAccumulator(bins)
        elif kind == "categorical":
            accumulators[name] = _CategoricalAccumulator(max_categories)
        else:
            skipped[name] = str(data_type)

    rows = 0
    for batch in table.batches(list(accumulators)):
        rows += batch.num_rows
        for name, accumulator in accumulators.items():
            accumulator.update(batch.column(name))

    return ReferenceStatistics(
        rows=rows,
        features={
            name: accumulator.result(str(table.schema.field(name).type))
            for name, accumulator in accumulators.items()
        },
        skipped=skipped,
        rank_error=float(kll_doubles_sketch.get_normalized_rank_error(_KLL_K, True)),
    )


# ---- input -------------------------------------------------------------------------------


class _Source:
    """The schema of a table, stream or Parquet path, and its batches of chosen columns."""

    def __init__(self, source: pa.Table | pa.RecordBatchReader | str | os.PathLike[str]) -> None:
        self._data: Any = source  # a Table, a RecordBatchReader or a pyarrow Dataset
        if isinstance(source, pa.Table | pa.RecordBatchReader):
            self.schema = source.schema
        elif isinstance(source, str | os.PathLike):
            path = os.fspath(source)
            try:
                self._data = ds.dataset(path, format="parquet")
            except FileNotFoundError as exc:
                raise InvalidInputError(
                    f"no file or folder at {path!r}",
                    code="reference/unreadable_source",
                    details={"path": path},
                ) from exc
            except pa.ArrowInvalid as exc:
                raise InvalidInputError(
                    f"cannot read Parquet from {path!r}: {exc}",
                    code="reference/unreadable_source",
                    details={"path": path},
                ) from exc
            self.schema = self._data.schema
        else:
            raise TypeError(
                "source must be a pyarrow Table, a RecordBatchReader or a path, "
                f"not {type(source).__name__}"
            )

    def batches(self, columns: list[str]) -> Iterator[Any]:
        """Batches of ``columns`` only, of at most ``BATCH_ROWS`` rows."""
        if isinstance(self._data, pa.Table):
            yield from self._data.select(columns).to_batches(max_chunksize=BATCH_ROWS)
            return
        if isinstance(self._data, pa.RecordBatchReader):
            batches: Iterator[Any] = (batch.select(columns) for batch in self._data)
        else:
            batches = self._parquet_batches(columns)
        for batch in batches:
            for offset in range(0, batch.num_rows, BATCH_ROWS):
                yield batch.slice(offset, BATCH_ROWS)

    def _parquet_batches(self, columns: list[str]) -> Iterator[Any]:
        # File by file, without pre-buffering: the dataset scanner and pre-buffered reads
        # run ahead of a slow consumer by whole row groups (measured on 10M rows: peak
        # growth 2-4 times that of this loop, which holds one row group's column chunks).
        for file in self._data.files:
            with self._data.filesystem.open_input_file(file) as handle:
                parquet = pq.ParquetFile(handle, pre_buffer=False)
                yield from parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns)


def _check_range(name: str, value: int, most: int) -> None:
    if not 1 <= value <= most:
        raise InvalidInputError(
            f"{name} must be between 1 and {most}, not {value}",
            code="reference/invalid_argument",
            details={"argument": name, "value": value},
        )


def _resolve_features(schema: Any, features: Sequence[str] | None) -> list[str]:
    available: list[str] = list(schema.names)
    if features is None:
        return available
    wanted = list(dict.fromkeys([features] if isinstance(features, str) else features))
    columns = set(available)
    unknown = [name for name in wanted if name not in columns]
    if unknown:
        raise InvalidInputError(
            f"unknown feature{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"the columns are {', '.join(map(repr, available))}",
            code="reference/unknown_feature",
            details={"unknown": unknown, "available": available},
        )
    return wanted


def _kind_of(data_type: Any) -> Literal["numeric", "categorical"] | None:
    types = pa.types
    if types.is_integer(data_type) or types.is_floating(data_type):
        return "numeric"
    if types.is_decimal(data_type):
        return "numeric"
    if types.is_dictionary(data_type):
        return "categorical" if _kind_of(data_type.value_type) is not None else None
    textual = (types.is_string, types.is_large_string, types.is_string_view, types.is_boolean)
    if any(check(data_type) for check in textual):
        return "categorical"
    return None


# ---- numeric features --------------------------------------------------------------------


class _NumericAccumulator:
    def __init__(self, bins: int) -> None:
        self.bins = bins
        self.count = 0
        self.missing = 0
        self.infinite = 0
        self.finite = 0  # the finite values seen, which the moments below describe
        self.mean = 0.0
        self.m2 = 0.0  # sum of squared deviations from the mean
        self.min = math.inf
        self.max = -math.inf
        self.sketch = kll_doubles_sketch(_KLL_K)

    def update(self, array: Any) -> None:
        self.count += len(array)
        # Nulls become NaN, so NaN counts both.
        values = pc.cast(array, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        # A copy even when every value is finite: the sketch takes writable arrays only,
        # and Arrow's are read-only.
        finite = values[np.isfinite(values)]
        if len(finite) < len(values):
            nan = int(np.count_nonzero(np.isnan(values)))
            self.missing += nan
            self.infinite += len(values) - len(finite) - nan
        if not len(finite):
            return
        self.sketch.update(finite)
        n, batch_mean = len(finite), float(finite.mean())
        squares = finite - batch_mean
        squares *= squares  # pairwise summation below: more accurate, and faster, than a dot
        batch_m2 = float(squares.sum())
        total = self.finite + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta * delta * self.finite * n / total
        self.finite = total
        self.min = min(self.min, float(finite.min()))
        self.max = max(self.max, float(finite.max()))

    def result(self, arrow_type: str) -> NumericStats:
        empty = self.finite == 0
        return NumericStats(
            arrow_type=arrow_type,
            count=self.count,
            null_count=self.missing,
            null_rate=self.missing / self.count if self.count else None,
            infinite_count=self.infinite,
            min=None if empty else self.min,
            max=None if empty else self.max,
            mean=None if empty else _finite_or_none(self.mean),
            std=_finite_or_none(math.sqrt(self.m2 / (self.finite - 1)))
            if self.finite > 1
            else None,
            quantiles=None if empty else self._quantiles(),
            histogram=None if empty else self._histogram(),
        )

    def _quantiles(self) -> dict[float, float]:
        values = [float(v) for v in self.sketch.get_quantiles(list(QUANTILE_LEVELS), True)]
        quantiles = dict(zip(QUANTILE_LEVELS, values, strict=True))
        quantiles[0.0], quantiles[1.0] = self.min, self.max
        return quantiles

    def _histogram(self) -> Histogram:
        if self.min == self.max:
            return Histogram(edges=[self.min, self.max], counts=[self.finite])
        edges = np.linspace(self.min, self.max, self.bins + 1)
        # Fraction of values below each inner edge; rounding the cumulative counts (not
        # each bin's) keeps every count >= 0 and their sum exact.
        below = np.asarray(self.sketch.get_cdf(edges[1:-1].tolist()), dtype=np.float64)[:-1]
        cumulative = np.rint(below * self.finite).astype(np.int64)
        counts = np.diff(np.concatenate(([0], cumulative, [self.finite])))
        return Histogram(edges=edges.tolist(), counts=[int(c) for c in counts])


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


# ---- categorical features ----------------------------------------------------------------


class _CategoricalAccumulator:
    def __init__(self, max_categories: int) -> None:
        self.max_categories = max_categories
        # A map many times larger than the values reported keeps their counts exact for
        # up to `capacity` distinct values and tight beyond (error <= 3.5 / map size).
        lg_map_size = max(12, (max_categories * 64).bit_length())
        self.capacity = 3 * (1 << lg_map_size) // 4
        self.frequent = frequent_strings_sketch(lg_map_size)
        self.distinct = hll_sketch(_HLL_LG_K)
        self.count = 0
        self.nulls = 0

    def update(self, array: Any) -> None:
        self.count += len(array)
        self.nulls += array.null_count
        if array.null_count == len(array):
            return
        counted = pc.value_counts(_as_text(array))
        valid = counted.field("values").is_valid()
        values = counted.field("values").filter(valid).to_pylist()
        weights = counted.field("counts").filter(valid).to_numpy()
        update_distinct = self.distinct.update
        for value in values:
            update_distinct(value)
        chosen = range(len(values))
        if len(values) > self.capacity:
            # Only a batch's most frequent values reach the sketch: a value left out
            # occurs at most rows / capacity times in the batch, a smaller error than
            # the sketch's own.
            chosen = np.argpartition(-weights, self.capacity)[: self.capacity].tolist()
        update_frequent = self.frequent.update
        for i in chosen:
            update_frequent(values[i], int(weights[i]))

    def result(self, arrow_type: str) -> CategoricalStats:
        non_null = self.count - self.nulls
        # Rows of (value, estimate, lower bound, upper bound); most frequent first, ties
        # by value so that equal inputs give equal outputs.
        rows = self.frequent.get_frequent_items(frequent_items_error_type.NO_FALSE_NEGATIVES)
        rows.sort(key=lambda row: (-row[1], row[0]))
        frequencies: dict[str, float] = {}
        for value, estimate, _, _ in rows[: self.max_categories]:
            key = str(value).replace("\x00", _NUL_STANDIN)
            frequencies[key] = frequencies.get(key, 0.0) + int(estimate) / non_null
        return CategoricalStats(
            arrow_type=arrow_type,
            count=self.count,
            null_count=self.nulls,
            null_rate=self.nulls / self.count if self.count else None,
            distinct_count=min(non_null, round(float(self.distinct.get_estimate()))),
            frequencies=frequencies,
            other_fraction=max(0.0, 1.0 - sum(frequencies.values())) if non_null else None,
        )


def _as_text(array: Any) -> Any:
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = pc.cast(array, pa.string())
    return array
