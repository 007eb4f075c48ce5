"""Reference statistics: figures against exact numpy/pyarrow ones, sources, edge cases.

Generated data throughout; quantiles and histogram counts are sketched (KLL), so they are
compared with the exact figures within a rank tolerance, everything else exactly. The one
``slow`` test streams 10,000,000 rows of Parquet in a subprocess and checks its peak
memory.
"""

from __future__ import annotations

import decimal
import json
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from modelyard.errors import InvalidInputError
from modelyard.monitoring.reference import (
    QUANTILE_LEVELS,
    CategoricalStats,
    NumericStats,
    ReferenceStatistics,
    reference_statistics,
)

ROWS = 200_000
RANK_TOLERANCE = 0.01  # KLL with k=1000 guarantees about 0.36% (99% confidence)
CITIES = [f"city-{i:02d}" for i in range(30)]


def features_table(rows: int, seed: int = 0) -> pa.Table:
    """Numeric and categorical features with nulls, NaN, skew and a Zipf-like category."""
    rng = np.random.default_rng(seed)
    normal = rng.normal(5.0, 2.0, rows)
    normal[rng.random(rows) < 0.01] = np.nan
    weights = 1.0 / np.arange(1, len(CITIES) + 1)
    city = pc.take(
        pa.array(CITIES), pa.array(rng.choice(len(CITIES), rows, p=weights / weights.sum()))
    )
    city_nulls = pa.array(rng.random(rows) < 0.05)
    return pa.table(
        {
            "normal": pa.array(normal, mask=rng.random(rows) < 0.05),
            "income": pa.array(rng.lognormal(10.0, 1.0, rows).astype(np.float32)),
            "visits": pa.array(rng.poisson(3.0, rows).astype(np.int32)),
            "city": pc.if_else(city_nulls, pa.scalar(None, pa.string()), city),
            "member": pa.array(rng.random(rows) < 0.3),
            "segment": pa.array(rng.choice(["a", "b", "c"], rows)).dictionary_encode(),
        }
    )


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return features_table(ROWS)


@pytest.fixture(scope="module")
def stats(table: pa.Table) -> ReferenceStatistics:
    return reference_statistics(table)


def as_float64(column: pa.ChunkedArray) -> np.ndarray[Any, Any]:
    """The column as float64, nulls as NaN."""
    return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False))


def numeric(stats: ReferenceStatistics, name: str) -> NumericStats:
    feature = stats.features[name]
    assert isinstance(feature, NumericStats)
    return feature


def categorical(stats: ReferenceStatistics, name: str) -> CategoricalStats:
    feature = stats.features[name]
    assert isinstance(feature, CategoricalStats)
    return feature


def exact_fractions(column: pa.ChunkedArray) -> dict[str, float]:
    """Each non-null value's share of the non-null values, most frequent first."""
    counts = pc.value_counts(column.drop_null()).to_pylist()
    total = sum(row["counts"] for row in counts)
    ordered = sorted(counts, key=lambda row: (-row["counts"], row["values"]))
    return {str(row["values"]): row["counts"] / total for row in ordered}


def assert_quantiles_within_rank(
    quantiles: dict[float, float], values: np.ndarray[Any, Any], tolerance: float
) -> None:
    """Each reported quantile's exact rank range in ``values`` reaches its level."""
    ordered = np.sort(values)
    for level, value in quantiles.items():
        below = np.searchsorted(ordered, value, side="left") / len(ordered)
        at_most = np.searchsorted(ordered, value, side="right") / len(ordered)
        assert below - tolerance <= level <= at_most + tolerance, (level, value, below, at_most)


# --- numeric features ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["normal", "income", "visits"])
def test_numeric_figures_match_numpy(
    table: pa.Table, stats: ReferenceStatistics, name: str
) -> None:
    values = as_float64(table.column(name))
    finite = values[np.isfinite(values)]
    feature = numeric(stats, name)

    assert feature.count == ROWS
    assert feature.null_count == int(np.isnan(values).sum())
    assert feature.null_rate == feature.null_count / ROWS
    assert feature.infinite_count == 0
    assert (feature.min, feature.max) == (finite.min(), finite.max())
    assert feature.mean == pytest.approx(finite.mean(), rel=1e-9)
    assert feature.std == pytest.approx(finite.std(ddof=1), rel=1e-9)

    assert feature.quantiles is not None
    assert list(feature.quantiles) == list(QUANTILE_LEVELS)
    assert (feature.quantiles[0.0], feature.quantiles[1.0]) == (finite.min(), finite.max())
    assert_quantiles_within_rank(feature.quantiles, finite, RANK_TOLERANCE)

    histogram = feature.histogram
    assert histogram is not None
    assert histogram.edges == pytest.approx(np.linspace(finite.min(), finite.max(), 21))
    exact, _ = np.histogram(finite, bins=np.asarray(histogram.edges))
    assert sum(histogram.counts) == len(finite)
    assert np.abs(np.asarray(histogram.counts) - exact).max() <= RANK_TOLERANCE * len(finite)


def test_the_rank_error_bound_is_reported(stats: ReferenceStatistics) -> None:
    assert 0 < stats.rank_error < RANK_TOLERANCE


def test_bins_sets_the_histogram_resolution(table: pa.Table) -> None:
    feature = numeric(reference_statistics(table, features=["visits"], bins=5), "visits")
    assert feature.histogram is not None
    assert len(feature.histogram.counts) == 5
    assert len(feature.histogram.edges) == 6


def test_nulls_nan_and_infinities_are_counted_apart_from_the_values() -> None:
    column = pa.array([1.0, 2.0, math.inf, -math.inf, math.nan, None, 3.0], from_pandas=False)
    feature = numeric(reference_statistics(pa.table({"x": column})), "x")
    assert (feature.count, feature.null_count, feature.infinite_count) == (7, 2, 2)
    assert feature.null_rate == pytest.approx(2 / 7)
    assert (feature.min, feature.max, feature.mean, feature.std) == (1.0, 3.0, 2.0, 1.0)
    assert feature.histogram is not None
    assert sum(feature.histogram.counts) == 3


def test_a_constant_feature_has_one_bin_and_no_spread() -> None:
    feature = numeric(reference_statistics(pa.table({"x": [4] * 1000})), "x")
    assert (feature.min, feature.max, feature.mean, feature.std) == (4.0, 4.0, 4.0, 0.0)
    assert feature.histogram is not None
    assert (feature.histogram.edges, feature.histogram.counts) == ([4.0, 4.0], [1000])


def test_decimals_and_unsigned_integers_are_numeric() -> None:
    prices = pa.array([decimal.Decimal("1.25"), decimal.Decimal("2.75"), None], pa.decimal128(6, 2))
    source = pa.table({"price": prices, "id": pa.array([1, 2, 3], pa.uint64())})
    stats = reference_statistics(source)
    assert numeric(stats, "price").mean == 2.0
    assert numeric(stats, "price").null_count == 1
    assert numeric(stats, "id").arrow_type == "uint64"
    assert numeric(stats, "id").max == 3.0


# --- categorical features -----------------------------------------------------------------


def test_category_frequencies_are_the_exact_shares(
    table: pa.Table, stats: ReferenceStatistics
) -> None:
    column = table.column("city")
    feature = categorical(stats, "city")
    exact = exact_fractions(column)

    assert feature.count == ROWS
    assert feature.null_count == column.null_count
    assert feature.null_rate == column.null_count / ROWS
    assert feature.distinct_count == len(CITIES)
    assert list(feature.frequencies) == list(exact)  # most frequent first
    assert feature.frequencies == pytest.approx(exact, abs=1e-12)
    assert feature.other_fraction == pytest.approx(0.0, abs=1e-12)


def test_max_categories_keeps_the_most_frequent_and_sums_the_rest(table: pa.Table) -> None:
    feature = categorical(reference_statistics(table, features=["city"], max_categories=5), "city")
    exact = exact_fractions(table.column("city"))
    top = dict(list(exact.items())[:5])
    assert feature.frequencies == pytest.approx(top, abs=1e-12)
    assert list(feature.frequencies) == list(top)
    assert feature.other_fraction == pytest.approx(1 - sum(top.values()), abs=1e-12)


def test_booleans_and_dictionaries_are_categories_of_their_text(
    table: pa.Table, stats: ReferenceStatistics
) -> None:
    member = categorical(stats, "member")
    share = pc.mean(pc.cast(table.column("member"), pa.float64())).as_py()
    assert member.arrow_type == "bool"
    assert member.frequencies == pytest.approx({"true": share, "false": 1 - share}, abs=1e-12)

    segment = categorical(stats, "segment")
    assert segment.arrow_type == "dictionary<values=string, indices=int32, ordered=0>"
    assert segment.frequencies == pytest.approx(exact_fractions(table.column("segment")))
    assert segment.distinct_count == 3

    codes = pa.array([7, 7, 8, None]).dictionary_encode()
    feature = categorical(reference_statistics(pa.table({"code": codes})), "code")
    assert feature.frequencies == {"7": 2 / 3, "8": 1 / 3}


def test_many_distinct_values_are_sketched_within_bounds() -> None:
    rng = np.random.default_rng(3)
    rows = 300_000
    ids = np.char.add("id-", rng.integers(0, 100_000, rows).astype(str))
    heavy = rng.random(rows)
    ids[heavy < 0.3] = "heavy-a"
    ids[(heavy >= 0.3) & (heavy < 0.45)] = "heavy-b"
    ids[(heavy >= 0.45) & (heavy < 0.5)] = "heavy-c"
    column = pa.chunked_array([pa.array(ids)])
    exact = exact_fractions(column)
    source = pa.RecordBatchReader.from_batches(
        pa.schema([("id", pa.string())]),
        pa.table({"id": column}).to_batches(max_chunksize=50_000),
    )

    feature = categorical(reference_statistics(source, max_categories=3), "id")

    assert list(feature.frequencies) == ["heavy-a", "heavy-b", "heavy-c"]
    for value, fraction in feature.frequencies.items():
        assert fraction == pytest.approx(exact[value], abs=0.002)
    assert feature.other_fraction == pytest.approx(1 - sum(list(exact.values())[:3]), abs=0.005)
    assert feature.distinct_count == pytest.approx(len(exact), rel=0.03)


def test_nul_characters_are_replaced_so_the_store_can_hold_them() -> None:
    stats = reference_statistics(pa.table({"s": ["a\x00b", "a\x00b", "c"]}))
    assert categorical(stats, "s").frequencies == {"a\ufffdb": 2 / 3, "c": 1 / 3}
    assert ReferenceStatistics.model_validate_json(stats.model_dump_json()) == stats


# --- sources ------------------------------------------------------------------------------


def assert_same(left: Any, right: Any, path: str = "") -> None:
    """Equal, except floats that may differ by rounding (moments merged per batch)."""
    if isinstance(left, dict) and isinstance(right, dict):
        assert list(left) == list(right), path
        for key in left:
            assert_same(left[key], right[key], f"{path}.{key}")
    elif isinstance(left, list) and isinstance(right, list):
        assert len(left) == len(right), path
        for i, (a, b) in enumerate(zip(left, right, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(left, float) and isinstance(right, float):
        assert left == pytest.approx(right, rel=1e-12), path
    else:
        assert left == right, path


def test_a_table_a_stream_and_a_parquet_file_or_folder_give_the_same_statistics(
    tmp_path: Path,
) -> None:
    # Fewer rows than the KLL sketch keeps, so quantiles are exact and comparable; the
    # stream, the file's row groups and the folder's files cut the rows differently.
    source = features_table(900, seed=1)
    pq.write_table(source, tmp_path / "one.parquet", row_group_size=250)
    folder = tmp_path / "folder"
    folder.mkdir()
    pq.write_table(source.slice(0, 400), folder / "part-0.parquet")
    pq.write_table(source.slice(400), folder / "part-1.parquet")
    reader = pa.RecordBatchReader.from_batches(source.schema, source.to_batches(max_chunksize=64))

    expected = reference_statistics(source).model_dump()
    assert expected["rows"] == 900
    for other in (reader, tmp_path / "one.parquet", str(tmp_path / "one.parquet"), folder):
        assert_same(reference_statistics(other).model_dump(), expected)


def test_features_chooses_and_orders_the_columns(tmp_path: Path, table: pa.Table) -> None:
    pq.write_table(table.slice(0, 900), tmp_path / "t.parquet")
    stats = reference_statistics(tmp_path / "t.parquet", features=["city", "visits", "city"])
    assert list(stats.features) == ["city", "visits"]
    assert stats.rows == 900
    whole = reference_statistics(table.slice(0, 900))
    assert_same(stats.features["city"].model_dump(), whole.features["city"].model_dump())
    assert_same(stats.features["visits"].model_dump(), whole.features["visits"].model_dump())
    assert list(reference_statistics(table.slice(0, 10), features="city").features) == ["city"]


def test_statistics_survive_a_json_round_trip(stats: ReferenceStatistics) -> None:
    text = stats.model_dump_json()
    again = ReferenceStatistics.model_validate_json(text)
    assert again == stats
    assert isinstance(again.features["normal"], NumericStats)
    assert isinstance(again.features["city"], CategoricalStats)
    assert json.loads(text)["features"]["city"]["kind"] == "categorical"


# --- bad input and edge cases -------------------------------------------------------------


def test_an_unknown_feature_names_itself_and_the_columns(table: pa.Table) -> None:
    with pytest.raises(InvalidInputError) as caught:
        reference_statistics(table, features=["visits", "age"])
    error = caught.value
    assert error.code == "reference/unknown_feature"
    assert "'age'" in error.message
    assert "'normal'" in error.message
    assert error.details == {"unknown": ["age"], "available": table.column_names}


@pytest.mark.parametrize(("argument", "value"), [("bins", 0), ("max_categories", 0)])
def test_out_of_range_arguments_are_refused(table: pa.Table, argument: str, value: int) -> None:
    with pytest.raises(InvalidInputError) as caught:
        reference_statistics(table, **{argument: value})
    assert caught.value.code == "reference/invalid_argument"


def test_a_missing_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as caught:
        reference_statistics(tmp_path / "nothing.parquet")
    assert caught.value.code == "reference/unreadable_source"


@pytest.mark.parametrize("as_stream", [False, True])
def test_empty_input_gives_zero_counts_and_no_figures(as_stream: bool) -> None:
    empty = features_table(0)
    source = pa.RecordBatchReader.from_batches(empty.schema, []) if as_stream else empty
    stats = reference_statistics(source)
    assert stats.rows == 0
    number = numeric(stats, "normal")
    assert (number.count, number.null_count, number.null_rate) == (0, 0, None)
    assert (number.min, number.max, number.mean, number.std) == (None, None, None, None)
    assert (number.quantiles, number.histogram) == (None, None)
    category = categorical(stats, "city")
    assert (category.count, category.distinct_count, category.frequencies) == (0, 0, {})
    assert (category.null_rate, category.other_fraction) == (None, None)


def test_all_null_columns_have_a_null_rate_of_one_and_no_figures() -> None:
    source = pa.table(
        {
            "x": pa.array([None] * 5, pa.float64()),
            "s": pa.array([None] * 5, pa.string()),
            "nothing": pa.array([None] * 5),
        }
    )
    stats = reference_statistics(source)
    number = numeric(stats, "x")
    assert (number.null_count, number.null_rate, number.mean, number.quantiles) == (
        5,
        1,
        None,
        None,
    )
    category = categorical(stats, "s")
    assert (category.null_count, category.null_rate, category.frequencies) == (5, 1, {})
    assert category.other_fraction is None
    assert stats.skipped == {"nothing": "null"}


def test_unsupported_types_are_skipped_and_listed() -> None:
    source = pa.table(
        {
            "tags": pa.array([[1, 2], [3]]),
            "where": pa.array([{"lat": 1.0}, {"lat": 2.0}]),
            "blob": pa.array([b"x", b"y"]),
            "at": pa.array(np.array(["2024-01-01", "2024-01-02"], dtype="datetime64[s]")),
            "kept": [1, 2],
        }
    )
    stats = reference_statistics(source)
    assert list(stats.features) == ["kept"]
    assert stats.skipped == {
        "tags": "list<item: int64>",
        "where": "struct<lat: double>",
        "blob": "binary",
        "at": "timestamp[s]",
    }
    assert stats.rows == 2


# --- memory -------------------------------------------------------------------------------

BIG_ROWS = 10_000_000
CHUNK_ROWS = 1_000_000

# VmHWM, not ru_maxrss: a child's ru_maxrss starts from the parent's resident size at
# fork, which here holds the generated data.
MEASURE = textwrap.dedent(
    """
    import json, re, sys, time
    from pathlib import Path
    from modelyard.monitoring.reference import reference_statistics
    started = time.perf_counter()
    stats = reference_statistics(sys.argv[1]) if len(sys.argv) > 1 else None
    seconds = time.perf_counter() - started
    status = Path("/proc/self/status").read_text()
    print(json.dumps({
        "peak_kib": int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)),
        "seconds": seconds,
        "stats": stats.model_dump() if stats else None,
    }))
    """
)


def measure(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
def test_ten_million_rows_stream_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.parquet"
    rng = np.random.default_rng(11)
    cities = pa.array(CITIES)
    arrow_bytes = nulls = 0
    total = 0.0
    schema = pa.schema(
        [
            ("amount", pa.float64()),
            ("count", pa.int64()),
            ("score", pa.float32()),
            ("city", pa.string()),
        ]
    )
    with pq.ParquetWriter(path, schema) as writer:
        for i in range(BIG_ROWS // CHUNK_ROWS):
            amount = rng.normal(100.0, 15.0, CHUNK_ROWS)
            score_nulls = rng.random(CHUNK_ROWS) < 0.1
            chunk = pa.table(
                {
                    "amount": amount,
                    "count": rng.integers(0, 1_000, CHUNK_ROWS),
                    "score": pa.array(rng.random(CHUNK_ROWS, np.float32), mask=score_nulls),
                    "city": pc.take(cities, rng.integers(0, len(CITIES), CHUNK_ROWS)),
                },
                schema=schema,
            )
            writer.write_table(chunk)
            if i == 0:
                pq.write_table(chunk, tmp_path / "small.parquet")
            arrow_bytes += chunk.nbytes
            nulls += int(score_nulls.sum())
            total += float(amount.sum())

    baseline_kib = measure()["peak_kib"]
    small_kib = measure(str(tmp_path / "small.parquet"))["peak_kib"]
    started = time.perf_counter()
    report = measure(str(path))
    wall = time.perf_counter() - started
    stats = ReferenceStatistics.model_validate(report["stats"])

    peak_mib, baseline_mib, small_mib = (
        kib / 1024 for kib in (report["peak_kib"], baseline_kib, small_kib)
    )
    print(
        f"\n{BIG_ROWS:,} rows ({arrow_bytes / 2**20:.0f} MiB in Arrow): statistics in "
        f"{report['seconds']:.2f} s ({wall:.2f} s with interpreter start), peak RSS "
        f"{peak_mib:.0f} MiB; after imports alone {baseline_mib:.0f} MiB, for "
        f"{CHUNK_ROWS:,} rows {small_mib:.0f} MiB"
    )
    assert stats.rows == BIG_ROWS
    assert numeric(stats, "score").null_count == nulls
    assert numeric(stats, "amount").mean == pytest.approx(total / BIG_ROWS, rel=1e-9)
    assert categorical(stats, "city").distinct_count == len(CITIES)
    limit_mib = baseline_mib + 0.4 * arrow_bytes / 2**20
    assert peak_mib < limit_mib, f"peak RSS {peak_mib:.0f} MiB, limit {limit_mib:.0f} MiB"
    # Ten times the rows, about the same memory: what is held does not grow with rows.
    assert peak_mib - small_mib < 64, f"{small_mib:.0f} MiB for 1M rows, {peak_mib:.0f} for 10M"
