"""Time-ordered ids: unique, and sorting by them sorts by creation time."""

from __future__ import annotations

import itertools
import re
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from sqlalchemy import String

from modelyard.store import ids
from modelyard.store.ids import new_id
from modelyard.store.models import Project

RANDOM_HEX_DIGITS = 16  # secrets.token_hex(8)


def _microseconds(identifier: str) -> int:
    return int(identifier[:-RANDOM_HEX_DIGITS], 16)


def _freeze_clock(monkeypatch: pytest.MonkeyPatch, *readings_ns: int) -> None:
    """Make ``new_id`` read ``readings_ns`` from its clock, in turn, then the last forever."""
    clock = itertools.chain(readings_ns, itertools.repeat(readings_ns[-1]))
    monkeypatch.setattr(ids, "time", SimpleNamespace(time_ns=lambda: next(clock)))
    monkeypatch.setattr(ids, "_last_micros", 0)  # forget ids made by earlier tests


def test_ten_thousand_ids_are_unique_and_fit_the_id_columns() -> None:
    made = [new_id() for _ in range(10_000)]

    assert len(set(made)) == len(made)
    column_type = Project.__table__.c.id.type
    assert isinstance(column_type, String)
    width = column_type.length
    assert width is not None
    for identifier in made:
        assert re.fullmatch(r"[0-9a-f]+", identifier)
        assert len(identifier) <= width
    assert len({len(identifier) for identifier in made}) == 1, "ids of one era share a length"


def test_ids_carry_their_creation_time_in_order() -> None:
    before = time.time_ns() // 1000
    made = [new_id() for _ in range(10_000)]
    after = time.time_ns() // 1000

    stamps = [_microseconds(identifier) for identifier in made]
    assert stamps == sorted(stamps)
    assert before <= stamps[0] <= stamps[-1] <= after
    # Whenever the clock moved on, the id sorts after every earlier one.
    for earlier, later in itertools.pairwise(made):
        if _microseconds(later) > _microseconds(earlier):
            assert later > earlier


def test_ids_made_in_later_microseconds_sort_later(monkeypatch: pytest.MonkeyPatch) -> None:
    start = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1_000_000)
    _freeze_clock(monkeypatch, *((start + step) * 1000 for step in range(2_000)))

    made = [new_id() for _ in range(2_000)]

    assert made == sorted(made)
    assert [_microseconds(identifier) for identifier in made] == list(range(start, start + 2_000))


def test_ids_sort_by_time_across_the_decades(monkeypatch: pytest.MonkeyPatch) -> None:
    years = (2001, 2026, 2050, 2099)
    stamps = [int(datetime(year, 1, 1, tzinfo=UTC).timestamp() * 1e9) for year in years]
    _freeze_clock(monkeypatch, *stamps)

    made = [new_id() for _ in years]

    assert made == sorted(made)
    assert len({len(identifier) for identifier in made}) == 1


def test_ids_made_in_the_same_microsecond_sort_in_creation_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _freeze_clock(monkeypatch, 1_780_000_000_000_000_000)

    made = [new_id() for _ in range(50)]

    assert len(set(made)) == len(made)
    assert made == sorted(made)
