"""The taxi pipeline: ingest -> validate (quarantine bad rows) -> DuckDB transforms ->
a feature table for training.

    modelyard run examples/taxi/pipeline.py:taxi -P rows=1000000

Trips come from the seeded generator next to this file (the NYC TLC yellow-taxi
schema), or from real TLC Parquet files with ``-P source=path/or/glob``.

The pipeline is scheduled ``@daily`` without catchup: each scheduled run covers its
logical day. Register the schedule on a server with
``modelyard schedules apply examples/taxi/pipeline.py:taxi --unpause``, or run past days
here with ``modelyard backfill examples/taxi/pipeline.py:taxi --start 2024-01-01
--end 2024-01-07``.
"""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from generate import SCHEMA, bad_row_mask, find_bad_rows, generate_trips, read_tlc

from modelyard.pipelines.execute import current_context
from modelyard.pipelines.pipeline import pipeline
from modelyard.pipelines.task import task
from modelyard.specs.schedules import ScheduleSpec

DEFAULT_WINDOW = ("2024-01-01", "2024-02-01")


@task
def window(start: str | None, end: str | None) -> dict[str, str]:
    """The trips' dates: the ones given, else the run's logical day (scheduled and
    backfilled runs), else January 2024."""
    if start and end:
        return {"start": start, "end": end}
    logical = current_context().logical_date
    if logical is None:
        return {"start": DEFAULT_WINDOW[0], "end": DEFAULT_WINDOW[1]}
    day = logical.date()
    return {"start": day.isoformat(), "end": (day + timedelta(days=1)).isoformat()}


@task
def ingest(
    rows: int, dates: dict[str, str], seed: int, source: str | None
) -> pa.RecordBatchReader | pa.Table:
    """Trips as a stream of record batches (generated), or real TLC files."""
    if source:
        return read_tlc(source)
    start, end = _dates(dates)
    batches = generate_trips(rows, start=start, end=end, seed=seed)
    return pa.RecordBatchReader.from_batches(SCHEMA, batches)


@task
def clean(trips: pa.Table, dates: dict[str, str]) -> pa.Table:
    """The rows that pass every check."""
    start, end = _dates(dates)
    bad = bad_row_mask(trips, start=start, end=end)
    return trips.filter(pc.invert(pa.array(bad)))


@task
def quarantine(trips: pa.Table, dates: dict[str, str]) -> pa.Table:
    """The rows that fail a check, each with the checks it fails: never dropped silently."""
    start, end = _dates(dates)
    faults = find_bad_rows(trips, start=start, end=end)
    names = list(faults)
    reasons = [",".join(name for name in names if faults[name][i]) for i in range(trips.num_rows)]
    table = trips.append_column("reasons", pa.array(reasons, pa.string()))
    return table.filter(pc.not_equal(table["reasons"], ""))


@task
def quality_report(trips: pa.Table, quarantined: pa.Table) -> dict[str, object]:
    counts: dict[str, int] = {}
    for reasons in quarantined["reasons"].to_pylist():
        for reason in reasons.split(","):
            counts[reason] = counts.get(reason, 0) + 1
    return {
        "rows": trips.num_rows,
        "quarantined": quarantined.num_rows,
        "by_reason": counts,
        "nulls": {name: trips[name].null_count for name in trips.column_names},
    }


@task
def by_pickup_hour(trips: pa.Table) -> duckdb.DuckDBPyRelation:
    """Trip duration and fare by pickup hour."""
    return duckdb.sql(
        """
        SELECT hour(tpep_pickup_datetime) AS pickup_hour,
               count(*) AS trips,
               avg(date_diff('second', tpep_pickup_datetime, tpep_dropoff_datetime)) / 60
                   AS avg_minutes,
               avg(fare_amount) AS avg_fare
        FROM trips GROUP BY 1 ORDER BY 1
        """
    )


@task
def by_distance(trips: pa.Table) -> duckdb.DuckDBPyRelation:
    """Average fare by distance bucket (0-1, 1-3, 3-5, 5-10, >10 miles)."""
    return duckdb.sql(
        """
        SELECT CASE WHEN trip_distance < 1 THEN '0-1'
                    WHEN trip_distance < 3 THEN '1-3'
                    WHEN trip_distance < 5 THEN '3-5'
                    WHEN trip_distance < 10 THEN '5-10'
                    ELSE '>10' END AS distance_bucket,
               count(*) AS trips, avg(fare_amount) AS avg_fare
        FROM trips GROUP BY 1 ORDER BY min(trip_distance)
        """
    )


@task
def by_vendor(trips: pa.Table) -> duckdb.DuckDBPyRelation:
    """Revenue by vendor."""
    return duckdb.sql(
        "SELECT vendorid, count(*) AS trips, sum(total_amount) AS revenue "
        "FROM trips GROUP BY 1 ORDER BY 1"
    )


@task
def features(trips: pa.Table) -> duckdb.DuckDBPyRelation:
    """One row per trip, the columns a fare model trains on, target last."""
    return duckdb.sql(
        """
        SELECT hour(tpep_pickup_datetime) AS pickup_hour,
               dayofweek(tpep_pickup_datetime) AS day_of_week,
               trip_distance, coalesce(passenger_count, 1) AS passenger_count,
               pulocationid, dolocationid, ratecodeid, payment_type,
               date_diff('second', tpep_pickup_datetime, tpep_dropoff_datetime) / 60.0
                   AS minutes,
               fare_amount
        FROM trips
        """
    )


def _dates(dates: dict[str, str]) -> tuple[date, date]:
    return date.fromisoformat(dates["start"]), date.fromisoformat(dates["end"])


@pipeline(schedule=ScheduleSpec(cron="@daily", catchup=False))
def taxi(
    rows: int = 1_000_000,
    start: str | None = None,
    end: str | None = None,
    seed: int = 0,
    source: str | None = None,
) -> None:
    """NYC yellow-taxi trips to aggregates and a training feature table."""
    dates = window(start, end)
    trips = ingest(rows, dates, seed, source)
    good = clean(trips, dates)
    bad = quarantine(trips, dates)
    quality_report(trips, bad)
    by_pickup_hour(good)
    by_distance(good)
    by_vendor(good)
    features(good)
