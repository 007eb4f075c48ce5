"""Seeded, streaming generator of realistic NYC yellow-taxi trips in the TLC schema.

Run it::

    python examples/taxi/generate.py --rows 1000000 --start 2024-01-01 --end 2024-02-01 \\
        --out data/trips.parquet [--partition-by day] [--seed 0] [--overwrite]

or use it from Python::

    for batch in generate_trips(1_000_000, start=date(2024, 1, 1), end=date(2024, 2, 1)):
        ...  # pyarrow.RecordBatch objects of SCHEMA, at most batch_rows rows each

    write_trips("data/trips.parquet", 1_000_000, start=..., end=...)
    write_trips("data/trips", 1_000_000, start=..., end=..., partition_by="day")
    table = read_tlc("yellow_tripdata_2024-01.parquet")  # real data, same column names

What the data looks like (``SCHEMA``, the columns of the TLC's yellow-taxi Parquet files
with lower-case names):

* pickups spread over ``[start, end)`` by day of week and hour (quiet at 3-5 am, a
  morning peak at 8-9 and the busiest hours at 17-19; weekends have late nights instead
  of a morning rush); times are whole seconds, naive local time, like the TLC's;
* zones 1..265, mostly Manhattan; airport trips to and from LaGuardia (138) and JFK (132),
  Newark (1, rate code 3), Nassau/Westchester (rate code 4) and negotiated fares (5);
* log-normal distances (median about 1.7 miles, a tail to about 30, a few 0.0);
  durations from an hour-of-day speed (about 11 mph on average, faster at night and to
  the airports) with noise, at least one minute;
* metered fares from the TLC's schedule: $3.00 plus $0.70 per fifth of a mile or minute
  in slow traffic from 2022-12-19 on (before: $2.50 and $0.50), JFK flat fare $70 (before:
  $52), the time-of-day extra, MTA tax, improvement and congestion surcharges, the
  airport fee on airport pickups, tolls, card tips of about 20% and
  ``total_amount`` exactly the sum of the parts;
* about 3% of trips without passenger count, rate code and store-and-forward flag (and
  some of those with payment type 0), as in the real files.

A fraction ``bad_fraction`` of the rows (exactly ``expected_bad_rows(rows,
bad_fraction)``) is broken on purpose, one fault per row, in turn one of ``BAD_KINDS``:
a negative fare (a refund: every amount negated), a dropoff before the pickup, a
passenger count of 0 or 9, a trip distance over 500 miles, a pickup outside
``[start, end)``. ``find_bad_rows`` tells them apart; a validation step should quarantine
exactly the rows it flags, and no good row is ever flagged.

The output depends only on ``rows``, ``start``, ``end``, ``seed`` and ``bad_fraction``:
rows are made in fixed chunks of ``CHUNK_ROWS``, each from its own random stream
(``SeedSequence(seed, spawn_key=(chunk,))``), so ``batch_rows`` only changes how the same
rows are cut into batches. Memory stays flat: at most about two batches are alive at
once, whatever the number of rows.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

__all__ = [
    "BAD_KINDS",
    "CHUNK_ROWS",
    "SCHEMA",
    "WriteSummary",
    "bad_row_mask",
    "expected_bad_rows",
    "find_bad_rows",
    "generate_trips",
    "main",
    "read_tlc",
    "write_trips",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

SCHEMA: Final = pa.schema(
    [
        ("vendorid", pa.int32()),
        ("tpep_pickup_datetime", pa.timestamp("us")),
        ("tpep_dropoff_datetime", pa.timestamp("us")),
        ("passenger_count", pa.int64()),
        ("trip_distance", pa.float64()),
        ("ratecodeid", pa.int64()),
        ("store_and_fwd_flag", pa.string()),
        ("pulocationid", pa.int32()),
        ("dolocationid", pa.int32()),
        ("payment_type", pa.int64()),
        ("fare_amount", pa.float64()),
        ("extra", pa.float64()),
        ("mta_tax", pa.float64()),
        ("tip_amount", pa.float64()),
        ("tolls_amount", pa.float64()),
        ("improvement_surcharge", pa.float64()),
        ("total_amount", pa.float64()),
        ("congestion_surcharge", pa.float64()),
        ("airport_fee", pa.float64()),
    ]
)
"""The TLC yellow-taxi columns (2023 on), lower-cased, in the TLC's order."""

MONEY_COLUMNS: Final = (
    "fare_amount",
    "extra",
    "mta_tax",
    "tip_amount",
    "tolls_amount",
    "improvement_surcharge",
    "congestion_surcharge",
    "airport_fee",
)
"""The parts that add up to ``total_amount``."""

BAD_KINDS: Final = (
    "negative_fare",
    "dropoff_before_pickup",
    "bad_passenger_count",
    "huge_trip_distance",
    "pickup_out_of_range",
)
"""The faults injected into bad rows; bad row number ``i`` (counting from 0) gets
``BAD_KINDS[i % len(BAD_KINDS)]``."""

CHUNK_ROWS: Final = 1 << 16
"""Rows are made in chunks of this size, each from its own random stream."""

MAX_PASSENGERS: Final = 8
MAX_TRIP_MILES: Final = 500.0

_US: Final = 1_000_000
_HOUR_US: Final = 3600 * _US
_DAY_US: Final = 24 * _HOUR_US
_EPOCH: Final = datetime(1970, 1, 1)

# Share of trips by pickup hour (any scale), from the shape of the TLC's own data.
_WEEKDAY_HOURS: Final = (
    2.0, 1.1, 0.7, 0.45, 0.4, 0.7, 1.9, 3.6, 5.0, 5.1, 4.6, 4.6,
    4.9, 5.0, 5.3, 5.5, 5.6, 6.6, 7.1, 6.4, 5.6, 5.4, 5.0, 3.7,
)  # fmt: skip
_WEEKEND_HOURS: Final = (
    4.6, 3.9, 3.0, 2.0, 1.2, 0.8, 0.8, 1.2, 2.0, 3.0, 3.9, 4.6,
    5.1, 5.4, 5.6, 5.6, 5.6, 5.9, 6.2, 5.8, 5.2, 5.0, 5.1, 5.0,
)  # fmt: skip
_DAY_OF_WEEK: Final = (0.90, 0.98, 1.03, 1.08, 1.07, 1.00, 0.84)  # Monday first
# Typical door-to-door speed in Manhattan by hour of day, in mph.
_HOUR_MPH: Final = (
    15.5, 16.5, 17.5, 18.5, 19.5, 19.0, 15.5, 12.5, 10.5, 10.0, 10.5, 10.5,
    10.0, 10.0, 9.5, 9.5, 9.5, 9.5, 10.0, 11.5, 13.0, 13.5, 14.0, 15.0,
)  # fmt: skip

# Manhattan's taxi zones, the busiest first.
_MANHATTAN: Final = (
    237, 161, 236, 162, 230, 186, 142, 170, 163, 239, 234, 68, 48, 79, 141, 107, 249,
    100, 140, 263, 43, 164, 113, 90, 233, 246, 229, 137, 151, 238, 50, 158, 125, 211,
    144, 231, 87, 13, 261, 209, 45, 148, 4, 224, 114, 143, 24, 166, 41, 74, 75, 42, 152,
    116, 244, 12, 88, 103, 104, 105, 120, 127, 128, 153, 194, 202, 232, 243, 262,
)  # fmt: skip
_BUSY_OUTER: Final = (7, 65, 66, 97, 112, 129, 145, 146, 181, 223, 226, 255, 256, 260)
_NEWARK, _JFK, _LAGUARDIA, _OUTSIDE_NYC = 1, 132, 138, 265

# Kinds of trip: their share, rate code and distance in miles.
_REGULAR, _TO_LGA, _TO_JFK, _TO_EWR, _NASSAU, _NEGOTIATED = range(6)
_TRIP_SHARES: Final = (0.9255, 0.035, 0.032, 0.0025, 0.002, 0.003)
_PAYMENT_SHARES: Final = (0.765, 0.21, 0.01, 0.015)  # card, cash, no charge, dispute
_PASSENGER_SHARES: Final = (0.74, 0.15, 0.04, 0.025, 0.025, 0.02)  # 1 to 6
_DISTANCES: Final[
    tuple[tuple[int, Literal["lognormal", "normal"], float, float, float, float], ...]
] = (
    # kind, law, median or mean, sigma, clipped to low..high miles
    (_REGULAR, "lognormal", 1.45, 0.72, 0.0, 40.0),
    (_TO_LGA, "normal", 9.8, 2.2, 4.0, 22.0),
    (_TO_JFK, "normal", 17.8, 2.8, 10.0, 32.0),
    (_TO_EWR, "normal", 17.5, 2.5, 11.0, 30.0),
    (_NASSAU, "lognormal", 19.0, 0.3, 8.0, 45.0),
    (_NEGOTIATED, "lognormal", 8.0, 0.6, 0.5, 40.0),
)


@dataclass(frozen=True)
class _Tariff:
    base: float  # initial charge
    unit: float  # per fifth of a mile, and per minute in slow traffic
    jfk_flat: float
    newark_surcharge: float
    overnight: float  # 8 pm - 6 am
    peak: float  # weekdays 4 pm - 8 pm
    improvement: float
    airport_fee: float
    toll: float


# The TLC's fare change of 2022-12-19 and the schedule before it.
_TARIFF_CHANGE: Final = date(2022, 12, 19)
_NEW_TARIFF: Final = _Tariff(3.00, 0.70, 70.0, 20.0, 1.0, 2.5, 1.0, 1.75, 6.94)
_OLD_TARIFF: Final = _Tariff(2.50, 0.50, 52.0, 17.5, 0.5, 1.0, 0.3, 1.25, 6.55)
_MTA_TAX: Final = 0.5
_CONGESTION: Final = 2.5


def _us(day: date) -> int:
    """Microseconds from the epoch to midnight starting ``day``."""
    return (datetime(day.year, day.month, day.day) - _EPOCH) // timedelta(microseconds=1)


def _cdf(weights: npt.ArrayLike) -> F64:
    cumulative = np.cumsum(np.asarray(weights, dtype=np.float64))
    return np.asarray(cumulative / cumulative[-1], dtype=np.float64)


def _draw(rng: np.random.Generator, cdf: F64, size: int) -> I64:
    """Indices drawn with the probabilities whose cumulative sums are ``cdf``."""
    index = np.searchsorted(cdf, rng.random(size), side="right")
    return np.minimum(index, len(cdf) - 1).astype(np.int64)


_TABLE_SIZE: Final = 1 << 16


def _table(weights: npt.ArrayLike, values: npt.ArrayLike | None = None) -> I64:
    """A lookup table in which ``values`` (0, 1, ... by default) appear in proportion to
    ``weights``, to within 1/65536: ``_pick`` draws from it much faster than ``_draw``."""
    cdf = _cdf(weights)
    slots = (np.arange(_TABLE_SIZE) + 0.5) / _TABLE_SIZE
    index = np.minimum(np.searchsorted(cdf, slots, side="right"), len(cdf) - 1)
    chosen = np.arange(len(cdf)) if values is None else np.asarray(values)
    return np.asarray(chosen, dtype=np.int64)[index]


def _pick(rng: np.random.Generator, table: I64, size: int) -> I64:
    return table[rng.integers(0, _TABLE_SIZE, size)]


@dataclass(frozen=True)
class _Plan:
    """Everything a chunk needs, computed once per call."""

    seed: int
    start_us: int
    end_us: int
    bad_fraction: float
    day_cdf: F64
    day_weekend: Mask
    weekday_hours: I64
    weekend_hours: I64
    hour_mph: F64
    trips: I64
    manhattan: I64
    outer: I64
    payments: I64
    passengers: I64
    is_manhattan: Mask  # by zone id, 0..265
    tariff_change_us: int

    @classmethod
    def make(cls, *, start: date, end: date, seed: int, bad_fraction: float) -> _Plan:
        days = (end - start).days
        weekdays = (start.weekday() + np.arange(days)) % 7
        manhattan = np.array(_MANHATTAN, dtype=np.int64)
        special = {_NEWARK, _JFK, _LAGUARDIA, *_MANHATTAN}
        outer = np.array([z for z in range(1, 266) if z not in special], dtype=np.int64)
        is_manhattan = np.zeros(266, dtype=np.bool_)
        is_manhattan[manhattan] = True
        return cls(
            seed=seed,
            start_us=_us(start),
            end_us=_us(end),
            bad_fraction=bad_fraction,
            day_cdf=_cdf(np.array(_DAY_OF_WEEK)[weekdays]),
            day_weekend=weekdays >= 5,
            weekday_hours=_table(_WEEKDAY_HOURS),
            weekend_hours=_table(_WEEKEND_HOURS),
            hour_mph=np.array(_HOUR_MPH, dtype=np.float64),
            trips=_table(_TRIP_SHARES),
            manhattan=_table(1.0 / (np.arange(len(manhattan)) + 3.0) ** 1.1, manhattan),
            outer=_table(np.where(np.isin(outer, _BUSY_OUTER), 5.0, 1.0), outer),
            payments=_table(_PAYMENT_SHARES, np.arange(1, len(_PAYMENT_SHARES) + 1)),
            passengers=_table(_PASSENGER_SHARES, np.arange(1, len(_PASSENGER_SHARES) + 1)),
            is_manhattan=is_manhattan,
            tariff_change_us=_us(_TARIFF_CHANGE),
        )


def expected_bad_rows(rows: int, bad_fraction: float) -> int:
    """How many of the first ``rows`` rows are bad: ``floor(rows * bad_fraction)``."""
    return math.floor(rows * bad_fraction + 1e-9)


def _tariff(field: str, new: Mask) -> F64:
    """The value of ``field`` in the tariff in force for each row (``new``: since 2022-12-19)."""
    now: float = getattr(_NEW_TARIFF, field)
    before: float = getattr(_OLD_TARIFF, field)
    return np.where(new, now, before)


def _chunk(plan: _Plan, index: int, row0: int, n: int) -> dict[str, npt.NDArray[Any]]:
    """Rows ``row0 .. row0 + n`` (chunk number ``index``) as numpy columns (see _DTYPES)."""
    rng = np.random.default_rng(np.random.SeedSequence(plan.seed, spawn_key=(index,)))

    # Which rows are bad, and how: the global bad-row count decides, so the numbers add up.
    first_bad = expected_bad_rows(row0, plan.bad_fraction)
    n_bad = expected_bad_rows(row0 + n, plan.bad_fraction) - first_bad
    bad = np.full(n, -1, dtype=np.int64)
    bad[np.sort(rng.choice(n, size=n_bad, replace=False))] = np.arange(
        first_bad, first_bad + n_bad
    ) % len(BAD_KINDS)

    # When: a day weighted by day of week, an hour by that day's profile, any second.
    day = _draw(rng, plan.day_cdf, n)
    weekend = plan.day_weekend[day]
    slot = rng.integers(0, _TABLE_SIZE, n)
    hour = np.where(weekend, plan.weekend_hours[slot], plan.weekday_hours[slot])
    pickup = (
        plan.start_us + day * _DAY_US + hour * _HOUR_US + rng.integers(0, 3600, n) * _US
    ).astype(np.int64)

    # Who and what kind of trip.
    vendor = np.where(rng.random(n) < 0.6, 1, 2).astype(np.int32)
    trip = _pick(rng, plan.trips, n)
    missing = (rng.random(n) < 0.03) & (bad != BAD_KINDS.index("bad_passenger_count"))

    # Where: mostly Manhattan, some outer boroughs; airports for the airport trips.
    manhattan_a = _pick(rng, plan.manhattan, n)
    manhattan_b = _pick(rng, plan.manhattan, n)
    outer_a = _pick(rng, plan.outer, n)
    outer_b = _pick(rng, plan.outer, n)
    pu = np.where(rng.random(n) < 0.95, manhattan_a, outer_a)
    do = np.where(rng.random(n) < 0.88, manhattan_b, outer_b)
    airport = np.select([trip == _TO_LGA, trip == _TO_JFK], [_LAGUARDIA, _JFK], 0)
    city_end = np.where(rng.random(n) < np.where(trip == _TO_JFK, 0.9, 0.75), manhattan_b, outer_b)
    from_airport = (airport > 0) & (rng.random(n) < 0.55)
    to_airport = (airport > 0) & ~from_airport
    pu = np.where(from_airport, airport, np.where(to_airport, city_end, pu))
    do = np.where(to_airport, airport, np.where(from_airport, city_end, do))
    far = trip >= _TO_EWR  # Newark, Nassau/Westchester, negotiated: from Manhattan
    pu = np.where(far, manhattan_a, pu)
    do = np.select([trip == _TO_EWR, trip == _NASSAU], [_NEWARK, _OUTSIDE_NYC], do)

    ratecode = np.select(
        [
            (trip == _TO_JFK) & plan.is_manhattan[city_end],
            trip == _TO_EWR,
            trip == _NASSAU,
            trip == _NEGOTIATED,
            rng.random(n) < 0.001,
        ],
        [2, 3, 4, 5, 99],
        1,
    ).astype(np.int64)

    # How far: log-normal in town (longer from the outer boroughs), normal to the airports.
    distance = np.zeros(n, dtype=np.float64)
    for kind, law, centre, spread, low, high in _DISTANCES:
        these = trip == kind
        k = int(these.sum())
        drawn = (
            rng.lognormal(math.log(centre), spread, k)
            if law == "lognormal"
            else rng.normal(centre, spread, k)
        )
        distance[these] = drawn.clip(low, high)
    outer_trip = (trip == _REGULAR) & ~(plan.is_manhattan[pu] & plan.is_manhattan[do])
    distance = np.where(outer_trip, distance * 1.8, distance).clip(0.0, 40.0)
    zero = (trip == _REGULAR) & (rng.random(n) < 0.012)
    distance = np.where(zero, 0.0, distance).round(2)

    # How long: an hour-of-day speed, faster at weekends and on highways, with noise.
    highway = (trip != _REGULAR) & (trip != _NEGOTIATED)
    mph = (
        plan.hour_mph[hour]
        * np.where(weekend, 1.1, 1.0)
        * np.where(highway, 1.7, 1.0)
        * rng.lognormal(0.0, 0.28, n)
    ).clip(4.0, 50.0)
    mph = np.maximum(mph, 4.0 + 0.5 * distance)  # long trips find the highways
    seconds = distance / mph * 3600.0 + rng.uniform(20.0, 120.0, n)
    seconds = np.where(zero, rng.uniform(60.0, 900.0, n), seconds)
    duration = np.maximum(np.round(seconds), 60.0).astype(np.int64) * _US
    dropoff = pickup + duration

    # What it cost.
    new = pickup >= plan.tariff_change_us
    minutes = duration / (60.0 * _US)
    slow_minutes = minutes * np.clip(1.0 - mph / 20.0, 0.0, 0.8) * 0.8
    metered = _tariff("base", new) + _tariff("unit", new) * np.round(distance * 5.0 + slow_minutes)
    negotiated = np.round(rng.uniform(20.0, 150.0, n) / 5.0) * 5.0
    fare = np.select(
        [ratecode == 2, ratecode == 3, ratecode == 4, ratecode == 5],
        [
            _tariff("jfk_flat", new),
            metered + _tariff("newark_surcharge", new),
            metered * 1.5,
            negotiated,
        ],
        metered,
    ).round(2)
    overnight = (hour >= 20) | (hour < 6)
    peak = ~weekend & (hour >= 16) & (hour < 20)
    extra = np.where(
        ratecode == 5,
        0.0,
        np.where(peak, _tariff("peak", new), np.where(overnight, _tariff("overnight", new), 0.0)),
    )
    mta_tax = np.full(n, _MTA_TAX)
    improvement = _tariff("improvement", new)
    touches_manhattan = plan.is_manhattan[pu] | plan.is_manhattan[do]
    congestion = np.where(touches_manhattan, _CONGESTION, 0.0)
    airport_fee = np.where(np.isin(pu, (_JFK, _LAGUARDIA)), _tariff("airport_fee", new), 0.0)
    toll_chance = np.select(
        [trip == _TO_EWR, trip == _NASSAU, airport > 0, outer_trip], [0.95, 0.7, 0.3, 0.25], 0.01
    )
    tolls = np.where(rng.random(n) < toll_chance, _tariff("toll", new), 0.0)

    # How it was paid: card 75%, cash 20%; card riders tip about 20% of the fare.
    payment = _pick(rng, plan.payments, n)
    payment = np.where(missing & (rng.random(n) < 0.3), 0, payment)
    v = rng.random(n)
    tip_rate = np.select(
        [v < 0.12, v < 0.52, v < 0.72, v < 0.80],
        [0.0, 0.20, 0.25, 0.30],
        rng.uniform(0.12, 0.28, n),
    )
    tip = np.where(payment == 1, np.round(fare * tip_rate, 2), 0.0)
    total = np.round(
        fare + extra + mta_tax + tip + tolls + improvement + congestion + airport_fee, 2
    )

    passengers = _pick(rng, plan.passengers, n)
    store_and_fwd = rng.random(n) < np.where(vendor == 1, 0.01, 0.001)

    # Break the bad rows, one fault each.
    refund = bad == BAD_KINDS.index("negative_fare")
    fare, extra, mta_tax, tip, tolls, improvement, congestion, airport_fee, total = (
        np.where(refund, -column, column) + 0.0  # + 0.0: no negative zeros
        for column in (
            fare, extra, mta_tax, tip, tolls, improvement, congestion, airport_fee, total
        )
    )  # fmt: skip
    backwards = bad == BAD_KINDS.index("dropoff_before_pickup")
    dropoff = np.where(backwards, pickup - duration, dropoff)
    crowd = bad == BAD_KINDS.index("bad_passenger_count")
    passengers = np.where(crowd, np.where(rng.random(n) < 0.75, 0, 9), passengers)
    odometer = bad == BAD_KINDS.index("huge_trip_distance")
    distance = np.where(odometer, np.round(10.0 ** rng.uniform(2.75, 5.2, n), 2), distance)
    elsewhen = bad == BAD_KINDS.index("pickup_out_of_range")
    r = rng.random(n)
    moved = np.select(
        [r < 0.5, r < 0.9],
        [
            plan.start_us - rng.integers(1, 3600, n) * _US,  # late trips of the day before
            plan.end_us + rng.integers(0, 86_400, n) * _US,  # the day after
        ],
        plan.start_us - 5479 * _DAY_US + pickup % _DAY_US,  # a broken clock, 15 years back
    )
    pickup = np.where(elsewhen, moved, pickup)
    dropoff = np.where(elsewhen, moved + duration, dropoff)

    columns: dict[str, npt.NDArray[Any]] = {
        "vendorid": vendor,
        "tpep_pickup_datetime": pickup,
        "tpep_dropoff_datetime": dropoff,
        "passenger_count": passengers,
        "trip_distance": distance,
        "ratecodeid": ratecode,
        "store_and_fwd_flag": store_and_fwd,
        "pulocationid": pu,
        "dolocationid": do,
        "payment_type": payment,
        "fare_amount": fare,
        "extra": extra,
        "mta_tax": mta_tax,
        "tip_amount": tip,
        "tolls_amount": tolls,
        "improvement_surcharge": improvement,
        "total_amount": total,
        "congestion_surcharge": congestion,
        "airport_fee": airport_fee,
        _MISSING: missing,
    }
    return {name: np.broadcast_to(values, n) for name, values in columns.items()}


# How a chunk holds each column: passenger count, rate code and flag (False "N", True "Y")
# are null where _MISSING is True.
_MISSING: Final = "missing"
_DTYPES: Final[dict[str, type[np.generic]]] = {
    **{field.name: np.float64 for field in SCHEMA},
    "vendorid": np.int32,
    "tpep_pickup_datetime": np.int64,
    "tpep_dropoff_datetime": np.int64,
    "passenger_count": np.int64,
    "ratecodeid": np.int64,
    "store_and_fwd_flag": np.bool_,
    "pulocationid": np.int32,
    "dolocationid": np.int32,
    "payment_type": np.int64,
    _MISSING: np.bool_,
}
_NULLABLE: Final = ("passenger_count", "ratecodeid", "store_and_fwd_flag")


class _Batch:
    """The numpy columns of one output batch, filled chunk by chunk."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.filled = 0
        self.columns = {name: np.empty(size, dtype) for name, dtype in _DTYPES.items()}

    def fill(self, chunk: dict[str, npt.NDArray[Any]], offset: int) -> int:
        """Copy rows of ``chunk`` from ``offset`` on, as many as fit; return how many."""
        count = min(self.size - self.filled, len(chunk[_MISSING]) - offset)
        for name, column in self.columns.items():
            column[self.filled : self.filled + count] = chunk[name][offset : offset + count]
        self.filled += count
        return count

    def record_batch(self) -> pa.RecordBatch:
        missing = self.columns[_MISSING]
        arrays = []
        for field in SCHEMA:
            values = self.columns[field.name]
            if field.name == "store_and_fwd_flag":
                codes = pa.array(values.view(np.int8), mask=missing)
                arrays.append(pc.take(pa.array(["N", "Y"], type=pa.string()), codes))
            else:
                mask = missing if field.name in _NULLABLE else None
                arrays.append(pa.array(values, type=field.type, mask=mask))
        return pa.record_batch(arrays, schema=SCHEMA)


def _check(
    rows: int, start: date, end: date, seed: int, bad_fraction: float, batch_rows: int
) -> None:
    if rows < 0:
        raise ValueError(f"rows must be >= 0, not {rows}")
    if not start < end:
        raise ValueError(f"start ({start}) must be before end ({end})")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, not {seed}")
    if not 0.0 <= bad_fraction <= 1.0:
        raise ValueError(f"bad_fraction must be between 0 and 1, not {bad_fraction}")
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, not {batch_rows}")


def generate_trips(
    rows: int,
    *,
    start: date,
    end: date,
    seed: int = 0,
    bad_fraction: float = 0.005,
    batch_rows: int = 500_000,
) -> Iterator[pa.RecordBatch]:
    """``rows`` trips with pickups in ``[start, end)``, as RecordBatches of ``SCHEMA``.

    Every batch has ``batch_rows`` rows but the last, which has the rest. The rows are the
    same for the same ``rows``, ``start``, ``end``, ``seed`` and ``bad_fraction``, whatever
    ``batch_rows``. Arguments are checked now, not at the first ``next()``.
    """
    _check(rows, start, end, seed, bad_fraction, batch_rows)
    plan = _Plan.make(start=start, end=end, seed=seed, bad_fraction=bad_fraction)
    return _batches(plan, rows, batch_rows)


def _batches(plan: _Plan, rows: int, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Chunks of CHUNK_ROWS rows, copied into batches of batch_rows: at most one batch being
    filled, one chunk and whatever batch the caller still holds are alive at a time."""
    yielded = 0
    batch = _Batch(min(batch_rows, rows))
    for index, row0 in enumerate(range(0, rows, CHUNK_ROWS)):
        chunk = _chunk(plan, index, row0, min(CHUNK_ROWS, rows - row0))
        offset = 0
        while offset < len(chunk[_MISSING]):
            offset += batch.fill(chunk, offset)
            if batch.filled == batch.size:
                done = batch.record_batch()
                yielded += batch.size
                batch = _Batch(min(batch_rows, rows - yielded))
                yield done
                del done


def _flags(condition: Any) -> Mask:
    return np.asarray(pc.fill_null(condition, False), dtype=np.bool_)


def find_bad_rows(data: pa.Table | pa.RecordBatch, *, start: date, end: date) -> dict[str, Mask]:
    """For each of ``BAD_KINDS``, which rows of ``data`` have that fault (nulls are not).

    What a validation step would check; ``start`` and ``end`` are the range the pickups
    should be in. Every bad row the generator makes is flagged by exactly one kind, and no
    good row by any.
    """
    pickup = data.column("tpep_pickup_datetime")
    dropoff = data.column("tpep_dropoff_datetime")
    passengers = data.column("passenger_count")
    earliest = pa.scalar(datetime(start.year, start.month, start.day), pa.timestamp("us"))
    latest = pa.scalar(datetime(end.year, end.month, end.day), pa.timestamp("us"))
    return {
        "negative_fare": _flags(
            pc.or_(pc.less(data.column("fare_amount"), 0), pc.less(data.column("total_amount"), 0))
        ),
        "dropoff_before_pickup": _flags(pc.less(dropoff, pickup)),
        "bad_passenger_count": _flags(
            pc.or_(pc.equal(passengers, 0), pc.greater(passengers, MAX_PASSENGERS))
        ),
        "huge_trip_distance": _flags(pc.greater(data.column("trip_distance"), MAX_TRIP_MILES)),
        "pickup_out_of_range": _flags(
            pc.or_(pc.less(pickup, earliest), pc.greater_equal(pickup, latest))
        ),
    }


def bad_row_mask(data: pa.Table | pa.RecordBatch, *, start: date, end: date) -> Mask:
    """Which rows of ``data`` have any of the faults of ``find_bad_rows``."""
    flags = list(find_bad_rows(data, start=start, end=end).values())
    return np.asarray(np.logical_or.reduce(flags), dtype=np.bool_)


@dataclass(frozen=True)
class WriteSummary:
    """What ``write_trips`` wrote."""

    path: Path
    rows: int
    bad_rows: int
    files: int
    bytes: int
    seconds: float


def write_trips(
    path: str | os.PathLike[str],
    rows: int,
    *,
    start: date,
    end: date,
    seed: int = 0,
    bad_fraction: float = 0.005,
    batch_rows: int = 500_000,
    partition_by: Literal["day"] | None = None,
    overwrite: bool = False,
    compression: str = "zstd",
    on_batch: Callable[[int], None] | None = None,
) -> WriteSummary:
    """Write ``generate_trips(...)`` to Parquet, one batch at a time, and say what was written.

    ``partition_by=None`` writes the one file ``path``; ``partition_by="day"`` makes
    ``path`` a folder of hive partitions by pickup date,
    ``pickup_date=YYYY-MM-DD/part-0.parquet`` (the bad rows picked up outside the range
    land in partitions of their own). The output is written beside ``path`` under a
    temporary name and moved into place at the end, so ``path`` never holds half a result.
    An existing ``path`` is replaced only with ``overwrite=True``. ``on_batch`` is called
    with the number of rows of each batch once it is written. By day, every batch adds a
    row group to each day's file, and one file per day is open until the end: mind
    ``ulimit -n`` for ranges of many years, and use larger batches for larger row groups.
    """
    began = time.perf_counter()
    batches = generate_trips(
        rows, start=start, end=end, seed=seed, bad_fraction=bad_fraction, batch_rows=batch_rows
    )
    if partition_by not in (None, "day"):
        raise ValueError(f"partition_by must be None or 'day', not {partition_by!r}")
    target = Path(path)
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    _remove(staging)
    bad_rows = 0

    def written(batch: pa.RecordBatch) -> None:
        nonlocal bad_rows
        bad_rows += int(bad_row_mask(batch, start=start, end=end).sum())
        if on_batch is not None:
            on_batch(batch.num_rows)

    try:
        if partition_by is None:
            with pq.ParquetWriter(staging, SCHEMA, compression=compression) as writer:
                for batch in batches:
                    writer.write_batch(batch)
                    written(batch)
        else:
            staging.mkdir()
            _write_days(staging, batches, compression, written)
        _remove(target)
        staging.rename(target)
    except BaseException:
        _remove(staging)
        raise
    files = [target] if target.is_file() else sorted(target.rglob("*.parquet"))
    return WriteSummary(
        path=target,
        rows=rows,
        bad_rows=bad_rows,
        files=len(files),
        bytes=sum(f.stat().st_size for f in files),
        seconds=time.perf_counter() - began,
    )


def _write_days(
    folder: Path,
    batches: Iterator[pa.RecordBatch],
    compression: str,
    written: Callable[[pa.RecordBatch], None],
) -> None:
    """Hive partitions by pickup date: one open writer per day seen, a row group per batch."""
    writers: dict[int, Any] = {}
    try:
        for batch in batches:
            pickup = np.asarray(batch.column("tpep_pickup_datetime").cast(pa.int64()))
            order = np.argsort(pickup // _DAY_US, kind="stable")
            days = pickup[order] // _DAY_US
            ordered = batch.take(pa.array(order))
            bounds = [0, *(np.flatnonzero(np.diff(days)) + 1).tolist(), len(days)]
            for lo, hi in itertools.pairwise(bounds):
                day = int(days[lo])
                writer = writers.get(day)
                if writer is None:
                    name = (date(1970, 1, 1) + timedelta(days=day)).isoformat()
                    part = folder / f"pickup_date={name}" / "part-0.parquet"
                    part.parent.mkdir()
                    writer = writers[day] = pq.ParquetWriter(part, SCHEMA, compression=compression)
                writer.write_batch(ordered.slice(lo, hi - lo))
            written(batch)
    finally:
        for writer in writers.values():
            writer.close()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def read_tlc(source: str | os.PathLike[str], *, keep_extra: bool = False) -> pa.Table:
    """Real TLC yellow-taxi Parquet as one table of ``SCHEMA``.

    ``source`` is a file, a folder (every ``*.parquet`` under it), a glob
    (``data/yellow_tripdata_2024-*.parquet``, ``**`` allowed), an ``http(s)://`` URL of one
    file (such as the TLC's own downloads) or an fsspec URL (``s3://bucket/trips/*.parquet``).
    Column names are lower-cased (``VendorID`` -> ``vendorid``, ``Airport_fee`` ->
    ``airport_fee``), each column is cast to its type in ``SCHEMA`` (older files have
    doubles for counts and int64 zone ids; a value that does not fit raises), and columns
    an older file lacks are null. Columns not in ``SCHEMA`` (``cbd_congestion_fee``) are
    dropped, or kept at the end with ``keep_extra=True``.
    """
    tables = [_conform(table, keep_extra=keep_extra) for table in _tlc_files(os.fspath(source))]
    if not tables:
        raise FileNotFoundError(f"no Parquet files in {os.fspath(source)!r}")
    return pa.concat_tables(tables, promote_options="default" if keep_extra else "none")


def _tlc_files(source: str) -> Iterator[pa.Table]:
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    if scheme in ("http", "https"):
        import httpx  # only for URLs

        response = httpx.get(source, follow_redirects=True, timeout=120.0)
        response.raise_for_status()
        yield pq.ParquetFile(pa.BufferReader(response.content)).read()
    elif scheme not in ("", "file"):
        import fsspec  # type: ignore[import-untyped]  # only for URLs

        for opened in fsspec.open_files(source, "rb"):
            with opened as handle:
                yield pq.ParquetFile(handle).read()
    else:
        local = source.removeprefix("file://")
        path = Path(local).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        elif any(c in local for c in "*?["):
            files = [Path(p) for p in sorted(glob.glob(os.path.expanduser(local), recursive=True))]
        else:
            files = [path]
        for file in files:
            yield pq.ParquetFile(file).read()


def _conform(table: pa.Table, *, keep_extra: bool) -> pa.Table:
    names = [name.lower() for name in table.column_names]
    if len(set(names)) != len(names):
        raise ValueError(f"columns clash once lower-cased: {table.column_names}")
    table = table.rename_columns(names)
    columns = [
        table.column(field.name).cast(field.type)
        if field.name in names
        else pa.chunked_array([pa.nulls(table.num_rows, field.type)], type=field.type)
        for field in SCHEMA
    ]
    conformed = pa.Table.from_arrays(columns, schema=SCHEMA)
    if keep_extra:
        for name in names:
            if name not in SCHEMA.names:
                conformed = conformed.append_column(name, table.column(name))
    return conformed


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    raise AssertionError("unreachable")


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: write trips to Parquet with a progress bar, then a summary."""
    parser = argparse.ArgumentParser(
        prog="generate.py",
        description="Write seeded, realistic NYC yellow-taxi trips (TLC schema) to Parquet.",
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="trips (default 1000000)")
    parser.add_argument(
        "--start", type=date.fromisoformat, default=date(2024, 1, 1), help="first pickup day"
    )
    parser.add_argument(
        "--end", type=date.fromisoformat, default=date(2024, 2, 1), help="day after the last"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="a file, or a folder with --partition-by"
    )
    parser.add_argument(
        "--partition-by", choices=["day"], default=None, help="hive partitions by pickup date"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bad-fraction", type=float, default=0.005, help="default 0.005")
    parser.add_argument("--batch-rows", type=int, default=500_000, help="default 500000")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    try:
        _check(args.rows, args.start, args.end, args.seed, args.bad_fraction, args.batch_rows)
    except ValueError as error:
        parser.error(str(error))

    console = Console()
    if (args.out.exists() or args.out.is_symlink()) and not args.overwrite:
        console.print(f"[red]error:[/red] {args.out} exists (use --overwrite to replace it)")
        return 1
    progress = Progress(
        TextColumn("generating"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed:,}/{task.total:,} rows"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    with progress:
        task = progress.add_task("trips", total=args.rows)
        try:
            summary = write_trips(
                args.out,
                args.rows,
                start=args.start,
                end=args.end,
                seed=args.seed,
                bad_fraction=args.bad_fraction,
                batch_rows=args.batch_rows,
                partition_by=args.partition_by,
                overwrite=args.overwrite,
                on_batch=lambda done: progress.advance(task, done),
            )
        except FileExistsError as error:
            progress.stop()
            console.print(f"[red]error:[/red] {error}")
            return 1

    share = summary.bad_rows / summary.rows if summary.rows else 0.0
    rate = summary.rows / summary.seconds if summary.seconds > 0 else 0.0
    table = Table(title=f"trips written to {summary.path}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("rows", f"{summary.rows:,}")
    table.add_row("bad rows", f"{summary.bad_rows:,} ({share:.2%})")
    table.add_row("files", f"{summary.files:,}")
    table.add_row("bytes", f"{summary.bytes:,} ({_human_bytes(summary.bytes)})")
    table.add_row("seconds", f"{summary.seconds:.2f}")
    table.add_row("rows/s", f"{rate:,.0f}")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
