"""``examples/taxi/generate.py``: schema, determinism, streaming, realism, bad rows, output.

Small row counts throughout, except for the one ``slow`` test that writes 2,000,000 rows
in a subprocess and checks that its peak memory stays bounded.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from examples.taxi.generate import (
    BAD_KINDS,
    CHUNK_ROWS,
    MONEY_COLUMNS,
    SCHEMA,
    bad_row_mask,
    expected_bad_rows,
    find_bad_rows,
    generate_trips,
    read_tlc,
    write_trips,
)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "taxi" / "generate.py"
START, END = date(2024, 1, 1), date(2024, 2, 1)
ROWS = 200_000


def trips(rows: int, **options: Any) -> pa.Table:
    options.setdefault("start", START)
    options.setdefault("end", END)
    return pa.Table.from_batches(list(generate_trips(rows, **options)), schema=SCHEMA)


def column(table: pa.Table, name: str) -> np.ndarray[Any, Any]:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False))


@pytest.fixture(scope="module")
def sample() -> pa.Table:
    """200,000 trips of January 2024, bad rows included."""
    return trips(ROWS, seed=7)


@pytest.fixture(scope="module")
def good(sample: pa.Table) -> pa.Table:
    """The rows of ``sample`` that a validator would keep."""
    return sample.filter(pa.array(~bad_row_mask(sample, start=START, end=END)))


# --- schema, determinism, batches --------------------------------------------------------


def test_the_schema_is_the_tlc_schema_in_order() -> None:
    batch = next(generate_trips(10, start=START, end=END))
    assert batch.schema == SCHEMA
    assert [(f.name, str(f.type)) for f in batch.schema] == [
        ("vendorid", "int32"),
        ("tpep_pickup_datetime", "timestamp[us]"),
        ("tpep_dropoff_datetime", "timestamp[us]"),
        ("passenger_count", "int64"),
        ("trip_distance", "double"),
        ("ratecodeid", "int64"),
        ("store_and_fwd_flag", "string"),
        ("pulocationid", "int32"),
        ("dolocationid", "int32"),
        ("payment_type", "int64"),
        ("fare_amount", "double"),
        ("extra", "double"),
        ("mta_tax", "double"),
        ("tip_amount", "double"),
        ("tolls_amount", "double"),
        ("improvement_surcharge", "double"),
        ("total_amount", "double"),
        ("congestion_surcharge", "double"),
        ("airport_fee", "double"),
    ]


def test_the_same_seed_gives_the_same_rows_and_the_same_bytes(tmp_path: Path) -> None:
    assert trips(20_000, seed=3).equals(trips(20_000, seed=3))
    first = write_trips(tmp_path / "a.parquet", 20_000, start=START, end=END, seed=3)
    second = write_trips(tmp_path / "b.parquet", 20_000, start=START, end=END, seed=3)
    assert first.bytes == second.bytes
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_another_seed_gives_other_rows() -> None:
    one, other = trips(20_000, seed=3), trips(20_000, seed=4)
    assert not one.equals(other)
    for name in ("tpep_pickup_datetime", "trip_distance", "fare_amount", "pulocationid"):
        assert not one.column(name).equals(other.column(name)), name


def test_the_batch_size_only_changes_how_the_rows_are_cut() -> None:
    rows = 2 * CHUNK_ROWS + 12_345
    reference = trips(rows, seed=5, batch_rows=rows)
    for batch_rows in (999, CHUNK_ROWS, CHUNK_ROWS + 1, 100_000):
        assert trips(rows, seed=5, batch_rows=batch_rows).equals(reference), batch_rows


@pytest.mark.parametrize(
    ("rows", "batch_rows"),
    [
        (0, 1000),
        (1, 1000),
        (999, 1000),
        (1000, 1000),
        (1001, 1000),
        (CHUNK_ROWS, 1000),
        (CHUNK_ROWS + 1, CHUNK_ROWS),
        (3 * CHUNK_ROWS - 7, 50_000),
        (250_001, 500_000),
    ],
)
def test_row_counts_are_exact_across_batch_boundaries(rows: int, batch_rows: int) -> None:
    sizes = [b.num_rows for b in generate_trips(rows, start=START, end=END, batch_rows=batch_rows)]
    assert sum(sizes) == rows
    full, last = divmod(rows, batch_rows)
    assert sizes == [batch_rows] * full + ([last] if last else [])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rows": -1}, "rows"),
        ({"end": START}, "before"),
        ({"start": END, "end": START}, "before"),
        ({"seed": -1}, "seed"),
        ({"bad_fraction": 1.5}, "bad_fraction"),
        ({"bad_fraction": -0.1}, "bad_fraction"),
        ({"batch_rows": 0}, "batch_rows"),
    ],
)
def test_bad_arguments_are_refused_at_the_call(options: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"rows": 10, "start": START, "end": END, **options}
    with pytest.raises(ValueError, match=message):
        generate_trips(arguments.pop("rows"), **arguments)  # no next(): checked eagerly


# --- realism ------------------------------------------------------------------------------


def share(values: np.ndarray[Any, Any], *wanted: object) -> float:
    return float(np.isin(values, wanted).mean())


def test_vendors_passengers_and_rate_codes(good: pa.Table) -> None:
    assert 0.55 < share(column(good, "vendorid"), 1) < 0.65
    assert set(column(good, "vendorid")) == {1, 2}
    passengers = good.column("passenger_count")
    assert 0.02 < passengers.null_count / len(good) < 0.04
    counts = column(good.filter(pc.is_valid(passengers)), "passenger_count")
    assert set(counts) == {1, 2, 3, 4, 5, 6}
    assert share(counts, 1) > 0.65
    rate = good.column("ratecodeid")
    assert 0.02 < rate.null_count / len(good) < 0.04
    codes = column(good.filter(pc.is_valid(rate)), "ratecodeid")
    assert set(codes) == {1, 2, 3, 4, 5, 99}
    assert share(codes, 1) > 0.9
    assert share(codes, 99) < 0.005


def test_store_and_forward_is_null_exactly_where_passenger_count_is(good: pa.Table) -> None:
    flag = good.column("store_and_fwd_flag")
    assert pc.is_null(flag).equals(pc.is_null(good.column("passenger_count")))
    assert pc.is_null(flag).equals(pc.is_null(good.column("ratecodeid")))
    values = column(good.filter(pc.is_valid(flag)), "store_and_fwd_flag")
    assert set(values) == {"N", "Y"}
    assert share(values, "Y") < 0.02


def test_payment_types_and_tips(good: pa.Table) -> None:
    payment = column(good, "payment_type")
    assert set(payment) == {0, 1, 2, 3, 4}
    assert 0.70 < share(payment, 1) < 0.80
    assert 0.15 < share(payment, 2) < 0.25
    assert share(payment, 0) < 0.02
    tip, fare = column(good, "tip_amount"), column(good, "fare_amount")
    assert (tip[payment != 1] == 0).all()
    card = payment == 1
    assert 0.15 < np.median(tip[card] / fare[card]) < 0.25
    assert 0.15 < np.mean(tip[card] / fare[card]) < 0.25


def test_distances_are_log_normal_with_a_long_tail(good: pa.Table) -> None:
    distance = column(good, "trip_distance")
    assert 1.2 < np.median(distance) < 2.5
    assert 0.005 < share(distance, 0.0) < 0.02
    assert 15 < np.quantile(distance, 0.99) < 30
    assert distance.max() <= 45
    assert (distance >= 0).all()
    assert np.array_equal(distance, distance.round(2))


def test_pickups_follow_the_hour_of_day(good: pa.Table) -> None:
    hours = np.bincount(
        column(good, "tpep_pickup_datetime").astype("datetime64[h]").astype(int) % 24
    )
    assert int(np.argmax(hours)) in (17, 18, 19)
    assert int(np.argmin(hours)) in (3, 4, 5)
    assert hours[18] > 5 * hours[4]
    assert hours[8] > 3 * hours[4]


def test_pickups_spread_over_every_day_of_the_range(good: pa.Table) -> None:
    days = column(good, "tpep_pickup_datetime").astype("datetime64[D]")
    assert days.min() == np.datetime64(START)
    assert days.max() == np.datetime64(END - timedelta(1))
    per_day = np.unique(days, return_counts=True)[1]
    assert len(per_day) == (END - START).days
    assert per_day.min() > 0.5 * per_day.mean()


def test_timestamps_are_whole_seconds(good: pa.Table) -> None:
    for name in ("tpep_pickup_datetime", "tpep_dropoff_datetime"):
        values = column(good, name)
        assert (values.astype("datetime64[s]") == values).all(), name


def test_durations_fit_the_distance(good: pa.Table) -> None:
    pickup = column(good, "tpep_pickup_datetime")
    dropoff = column(good, "tpep_dropoff_datetime")
    seconds = (dropoff - pickup) / np.timedelta64(1, "s")
    assert (dropoff > pickup).all()
    assert seconds.min() >= 60
    assert seconds.max() < 4 * 3600
    distance = column(good, "trip_distance")
    assert 9 < distance.sum() / (seconds.sum() / 3600) < 14  # mph
    assert np.corrcoef(distance, seconds)[0, 1] > 0.7


def test_zones_and_airports(good: pa.Table) -> None:
    pickup_zone, dropoff_zone = column(good, "pulocationid"), column(good, "dolocationid")
    for zones in (pickup_zone, dropoff_zone):
        assert zones.min() >= 1
        assert zones.max() <= 265
        assert len(set(zones)) > 150
    fee = column(good, "airport_fee")
    assert set(fee) == {0.0, 1.75}
    assert np.array_equal(fee == 1.75, np.isin(pickup_zone, (132, 138)))
    assert 0.02 < share(pickup_zone, 132, 138) < 0.06


def test_fares_and_surcharges_follow_the_2024_schedule(good: pa.Table) -> None:
    fare = column(good, "fare_amount")
    rate = column(good, "ratecodeid")
    assert (fare[rate == 2] == 70.0).all()  # JFK flat fare
    metered = rate == 1
    assert (fare[metered] >= 3.0).all()
    assert 8 < np.median(fare[metered]) < 16
    per_mile = np.median((fare - 3.0)[metered] / column(good, "trip_distance")[metered].clip(1))
    assert 2.5 <= per_mile < 6
    assert set(column(good, "extra")) == {0.0, 1.0, 2.5}
    assert set(column(good, "mta_tax")) == {0.5}
    assert set(column(good, "improvement_surcharge")) == {1.0}
    assert set(column(good, "tolls_amount")) == {0.0, 6.94}
    assert share(column(good, "tolls_amount"), 0.0) > 0.85
    congestion = column(good, "congestion_surcharge")
    assert set(congestion) == {0.0, 2.5}
    assert share(congestion, 2.5) > 0.8


def test_total_amount_is_the_sum_of_the_parts(good: pa.Table) -> None:
    parts = sum(column(good, name) for name in MONEY_COLUMNS)
    assert np.abs(column(good, "total_amount") - parts).max() < 0.005
    for name in (*MONEY_COLUMNS, "total_amount"):
        values = column(good, name)
        assert (values >= 0).all(), name
        assert np.array_equal(values, values.round(2)), name


def test_the_fare_schedule_before_december_2022() -> None:
    old = trips(20_000, start=date(2022, 6, 1), end=date(2022, 7, 1), bad_fraction=0.0)
    assert set(column(old, "improvement_surcharge")) == {0.3}
    assert set(column(old, "extra")) == {0.0, 0.5, 1.0}
    assert set(column(old.filter(pc.equal(old.column("ratecodeid"), 2)), "fare_amount")) == {52.0}


# --- bad rows -------------------------------------------------------------------------------


def test_bad_rows_are_the_fraction_asked_for_and_of_every_kind(sample: pa.Table) -> None:
    found = find_bad_rows(sample, start=START, end=END)
    assert list(found) == list(BAD_KINDS)
    expected = expected_bad_rows(ROWS, 0.005)
    assert expected == 1000
    flagged = np.sum([mask for mask in found.values()], axis=0)
    assert flagged.max() == 1  # one fault per bad row
    assert flagged.sum() == expected
    for kind, mask in found.items():
        assert mask.sum() == expected // len(BAD_KINDS), kind


def test_what_the_bad_rows_look_like(sample: pa.Table) -> None:
    found = find_bad_rows(sample, start=START, end=END)

    def rows(kind: str) -> pa.Table:
        return sample.filter(pa.array(found[kind]))

    refunds = rows("negative_fare")
    assert (column(refunds, "fare_amount") < 0).all()
    assert (column(refunds, "total_amount") < 0).all()
    backwards = rows("dropoff_before_pickup")
    assert (
        column(backwards, "tpep_dropoff_datetime") < column(backwards, "tpep_pickup_datetime")
    ).all()
    assert set(column(rows("bad_passenger_count"), "passenger_count")) == {0, 9}
    assert (column(rows("huge_trip_distance"), "trip_distance") > 500).all()
    moved = column(rows("pickup_out_of_range"), "tpep_pickup_datetime")
    outside = (moved < np.datetime64(START)) | (moved >= np.datetime64(END))
    assert outside.all()
    assert (moved < np.datetime64(START)).any()
    assert (moved >= np.datetime64(END)).any()


@pytest.mark.parametrize("bad_fraction", [0.0, 0.001, 0.02, 0.25])
def test_bad_fraction_is_respected(bad_fraction: float) -> None:
    table = trips(50_000, seed=11, bad_fraction=bad_fraction)
    bad = int(bad_row_mask(table, start=START, end=END).sum())
    assert bad == expected_bad_rows(50_000, bad_fraction)
    assert abs(bad - 50_000 * bad_fraction) <= 1
    if bad >= len(BAD_KINDS):
        found = find_bad_rows(table, start=START, end=END)
        assert all(mask.any() for mask in found.values())


# --- writing ------------------------------------------------------------------------------


def test_write_one_file(tmp_path: Path) -> None:
    path = tmp_path / "out" / "trips.parquet"
    seen: list[int] = []
    summary = write_trips(
        path, 30_000, start=START, end=END, seed=2, batch_rows=7_000, on_batch=seen.append
    )
    assert seen == [7_000] * 4 + [2_000]
    assert (summary.rows, summary.bad_rows, summary.files) == (30_000, 150, 1)
    assert summary.bytes == path.stat().st_size
    assert summary.seconds > 0
    written = pq.read_table(path)
    assert written.schema.remove_metadata() == SCHEMA
    assert written.equals(trips(30_000, seed=2))
    assert pq.ParquetFile(path).metadata.num_row_groups == 5
    assert sorted(p.name for p in path.parent.iterdir()) == ["trips.parquet"]  # no leftovers


def test_an_existing_output_is_replaced_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "trips.parquet"
    write_trips(path, 100, start=START, end=END)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_trips(path, 200, start=START, end=END)
    assert pq.read_metadata(path).num_rows == 100
    write_trips(path, 200, start=START, end=END, overwrite=True)
    assert pq.read_metadata(path).num_rows == 200


def test_hive_partitions_by_day_read_by_duckdb(tmp_path: Path) -> None:
    start, end, rows = date(2024, 3, 1), date(2024, 3, 8), 30_000
    folder = tmp_path / "trips"
    summary = write_trips(
        folder, rows, start=start, end=end, seed=9, batch_rows=8_000, partition_by="day"
    )
    parts = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert parts, "nothing written"
    assert all(re.fullmatch(r"pickup_date=\d{4}-\d{2}-\d{2}/part-0\.parquet", p) for p in parts)
    assert summary.files == len(parts)
    assert summary.bytes == sum(p.stat().st_size for p in folder.rglob("*.parquet"))

    expected = trips(rows, start=start, end=end, seed=9)
    days, counts = np.unique(
        column(expected, "tpep_pickup_datetime").astype("datetime64[D]"), return_counts=True
    )
    want = {d.astype(object): int(c) for d, c in zip(days, counts, strict=True)}
    inside = {d for d in want if start <= d < end}
    assert inside == {start + timedelta(i) for i in range(7)}
    assert set(want) - inside, "the out-of-range bad rows have partitions of their own"

    source = f"read_parquet('{folder.as_posix()}/**/*.parquet', hive_partitioning=true)"
    with duckdb.connect() as db:
        got = dict(db.sql(f"SELECT pickup_date, count(*) FROM {source} GROUP BY 1").fetchall())  # noqa: S608
        wrong_day = db.sql(
            f"SELECT count(*) FROM {source} "  # noqa: S608
            "WHERE pickup_date <> CAST(tpep_pickup_datetime AS DATE)"
        ).fetchall()
        total = db.sql(f"SELECT count(*) FROM {source}").fetchall()  # noqa: S608
    assert got == want
    assert wrong_day == [(0,)]
    assert total == [(rows,)]

    back = read_tlc(folder)  # the folder, without the partition column
    assert back.schema == SCHEMA
    assert back.num_rows == rows
    assert back.sort_by(list(zip(SCHEMA.names, ["ascending"] * len(SCHEMA), strict=True))).equals(
        expected.sort_by(list(zip(SCHEMA.names, ["ascending"] * len(SCHEMA), strict=True)))
    )


# --- read_tlc -------------------------------------------------------------------------------

TLC_NAMES = {
    "vendorid": "VendorID",
    "ratecodeid": "RatecodeID",
    "pulocationid": "PULocationID",
    "dolocationid": "DOLocationID",
    "airport_fee": "Airport_fee",
}


def as_tlc_file(table: pa.Table, path: Path, *, older: bool = False) -> None:
    """``table`` as the TLC publishes it: CamelCase names; ``older``: 2022-style types,
    without ``airport_fee``, with an extra column."""
    if older:
        table = table.drop_columns(["airport_fee"])
        for name, kind in {
            "vendorid": pa.int64(),
            "passenger_count": pa.float64(),
            "ratecodeid": pa.float64(),
            "pulocationid": pa.int64(),
            "tpep_pickup_datetime": pa.timestamp("ns"),
            "store_and_fwd_flag": pa.large_string(),
        }.items():
            index = table.schema.get_field_index(name)
            table = table.set_column(index, name, table.column(name).cast(kind))
        table = table.append_column("cbd_congestion_fee", pa.array([0.75] * len(table)))
    table = table.rename_columns([TLC_NAMES.get(name, name) for name in table.column_names])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def test_read_tlc_lower_cases_and_conforms_a_file_a_folder_and_a_glob(tmp_path: Path) -> None:
    january, february = trips(3_000, seed=1), trips(2_000, seed=2)
    as_tlc_file(january, tmp_path / "tlc" / "yellow_tripdata_2024-01.parquet")
    as_tlc_file(february, tmp_path / "tlc" / "yellow_tripdata_2024-02.parquet")
    assert "VendorID" in pq.read_schema(tmp_path / "tlc" / "yellow_tripdata_2024-01.parquet").names

    one = read_tlc(tmp_path / "tlc" / "yellow_tripdata_2024-01.parquet")
    assert one.column_names == [name.lower() for name in one.column_names] == SCHEMA.names
    assert one.schema == SCHEMA
    assert one.equals(january)
    both = pa.concat_tables([january, february])
    assert read_tlc(tmp_path / "tlc").equals(both)
    assert read_tlc(str(tmp_path / "tlc" / "yellow_tripdata_2024-*.parquet")).equals(both)
    assert read_tlc(f"{tmp_path}/**/*-02.parquet").equals(february)


def test_read_tlc_conforms_older_files(tmp_path: Path) -> None:
    table = trips(3_000, seed=1)
    as_tlc_file(table, tmp_path / "yellow_tripdata_2022-01.parquet", older=True)
    read = read_tlc(tmp_path / "yellow_tripdata_2022-01.parquet")
    assert read.schema == SCHEMA
    assert read.column("airport_fee").null_count == len(table)
    assert read.drop_columns(["airport_fee"]).equals(table.drop_columns(["airport_fee"]))
    kept = read_tlc(tmp_path / "yellow_tripdata_2022-01.parquet", keep_extra=True)
    assert kept.column_names == [*SCHEMA.names, "cbd_congestion_fee"]


def test_read_tlc_refuses_what_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_tlc(tmp_path / "nothing-*.parquet")
    with pytest.raises(FileNotFoundError):
        read_tlc(tmp_path / "missing.parquet")


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A folder served over HTTP on loopback: (base URL, folder)."""
    folder = tmp_path / "www"
    folder.mkdir()
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_read_tlc_reads_a_url(http_folder: tuple[str, Path]) -> None:
    url, folder = http_folder
    table = trips(2_000, seed=4)
    as_tlc_file(table, folder / "yellow_tripdata_2024-01.parquet")
    assert read_tlc(f"{url}/yellow_tripdata_2024-01.parquet").equals(table)


# --- the command line -----------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_the_command_line_writes_and_summarises(tmp_path: Path) -> None:
    out = tmp_path / "data" / "trips.parquet"
    common = ("--rows", "20000", "--start", "2024-01-01", "--end", "2024-02-01", "--seed", "3")
    done = run_cli(*common, "--out", str(out))
    assert done.returncode == 0, done.stderr
    for expected in ("rows", "20,000", "bad rows", "100 (0.50%)", "bytes", "seconds"):
        assert expected in done.stdout, done.stdout
    assert "20,000/20,000" in done.stderr  # the progress bar
    assert pq.read_table(out).equals(trips(20_000, seed=3))

    again = run_cli(*common, "--out", str(out))
    assert again.returncode == 1
    assert "--overwrite" in again.stdout

    folder = tmp_path / "data" / "by-day"
    parted = run_cli(*common, "--out", str(folder), "--partition-by", "day")
    assert parted.returncode == 0, parted.stderr
    assert (folder / "pickup_date=2024-01-15" / "part-0.parquet").is_file()

    wrong = run_cli("--rows", "10", "--start", "2024-02-01", "--end", "2024-01-01", "--out", "x")
    assert wrong.returncode == 2
    assert "before" in wrong.stderr


# --- memory ---------------------------------------------------------------------------------

PEAK_RSS = textwrap.dedent(
    """
    import json, resource, sys
    from datetime import date
    sys.path.insert(0, sys.argv[1])
    from examples.taxi.generate import write_trips
    rows, folder = int(sys.argv[2]), sys.argv[3]
    span = {"start": date(2024, 1, 1), "end": date(2024, 2, 1), "batch_rows": 100_000}
    write_trips(f"{folder}/warm-up.parquet", 1_000, **span)  # load every library first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    summary = write_trips(f"{folder}/trips.parquet", rows, **span)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": summary.rows, "growth_kib": after - before}))
    """
)


def peak_growth_mib(rows: int, folder: Path) -> float:
    """How much a fresh process's peak RSS grows while writing ``rows`` rows, in MiB."""
    folder.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, str(ROOT), str(rows), str(folder)],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    report = json.loads(done.stdout)
    assert report["rows"] == rows
    assert pq.read_metadata(folder / "trips.parquet").num_rows == rows
    return float(report["growth_kib"]) / 1024


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_memory_stays_flat_for_two_million_rows(tmp_path: Path) -> None:
    small = peak_growth_mib(200_000, tmp_path / "small")
    large = peak_growth_mib(2_000_000, tmp_path / "large")
    # Two million rows take about 260 MiB in Arrow; writing them 100,000 at a time must
    # not come near that, nor grow much beyond what 200,000 rows take.
    assert large < 200, f"peak RSS grew by {large:.0f} MiB for 2,000,000 rows"
    assert large - small < 64, f"{small:.0f} MiB for 200,000 rows, {large:.0f} for 2,000,000"
