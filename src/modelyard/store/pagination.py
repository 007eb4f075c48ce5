"""Keyset (cursor) pagination over time-ordered ids."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from modelyard.errors import InvalidInputError

T = TypeVar("T")

_ID = re.compile(r"[0-9a-f]{1,32}")
_MAX_CURSOR_CHARS = 200  # an issued cursor is about 60
DEFAULT_LIMIT = 50
MAX_LIMIT = 500


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last_id}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    if len(cursor) > _MAX_CURSOR_CHARS:
        raise InvalidInputError(
            "the cursor is not one this server issued",
            code="request/invalid_cursor",
            details={"field": "cursor"},
        )
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after = value["after"]
    except (binascii.Error, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise InvalidInputError(
            "the cursor is not one this server issued",
            code="request/invalid_cursor",
            details={"field": "cursor"},
        ) from exc
    if not isinstance(after, str) or not _ID.fullmatch(after):
        raise InvalidInputError(
            "the cursor is not one this server issued",
            code="request/invalid_cursor",
            details={"field": "cursor"},
        )
    return after


def paginate(
    session: Session,
    statement: Select[Any],
    id_column: InstrumentedAttribute[str],
    *,
    cursor: str | None,
    limit: int,
    descending: bool = False,
) -> Page[Any]:
    """Run ``statement`` one page at a time, ordered by ``id_column``."""
    limit = max(1, min(limit, MAX_LIMIT))
    if cursor:
        after = decode_cursor(cursor)
        statement = statement.where(id_column < after if descending else id_column > after)
    order = id_column.desc() if descending else id_column.asc()
    rows = list(session.scalars(statement.order_by(order).limit(limit + 1)).unique())
    has_more = len(rows) > limit
    items = rows[:limit]
    next_cursor = encode_cursor(getattr(items[-1], id_column.key)) if has_more else None
    return Page(items=items, next_cursor=next_cursor)
