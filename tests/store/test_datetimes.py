"""Datetimes: stored as UTC, returned timezone-aware in UTC, naive ones refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, sessionmaker

from modelyard.store.db import session_factory, transaction
from modelyard.store.models import ApiToken, AuditEvent, Project
from modelyard.store.repositories import AuditRepository
from tests.store.conftest import Database, Seed

INDIA = timezone(timedelta(hours=5, minutes=30))
GIVEN = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=INDIA)


def _reader(database: Database, store_engine: Engine) -> sessionmaker[Session]:
    """Sessions whose connection does *not* run in UTC where the backend has a time zone.

    The test server runs in UTC, so without this a missing conversion would go unnoticed.
    """
    if database.backend != "postgresql":
        return session_factory(store_engine)
    options: dict[str, Any] = {"connect_args": {"options": "-c TimeZone=America/New_York"}}
    return session_factory(database.engine(**options))


def _assert_utc(value: datetime | None) -> None:
    assert value is not None
    assert value.tzinfo is not None, "datetimes must come back timezone-aware"
    assert value.utcoffset() == timedelta(0)
    assert value.tzname() == "UTC"


def _event(at: datetime | None = None, actor: str = "ada") -> AuditEvent:
    event = AuditEvent(actor=actor, action="project.create", resource_type="project")
    if at is not None:
        event.at = at
    return event


def test_datetimes_come_back_aware_in_utc(
    migrated_database: Database, store_engine: Engine, sessions: sessionmaker[Session], seed: Seed
) -> None:
    before = datetime.now(UTC)
    with transaction(sessions) as session:
        session.add(_event(GIVEN))
        session.add(
            ApiToken(
                user_id=seed.user_id, name="t", token_hash="e" * 64, prefix="e", expires_at=GIVEN
            )
        )
    after = datetime.now(UTC)

    with _reader(migrated_database, store_engine)() as session:
        if migrated_database.backend == "postgresql":
            assert session.scalar(select(func.current_setting("TimeZone"))) == "America/New_York"
        at = session.scalar(select(AuditEvent.at))
        assert at is not None
        _assert_utc(at)
        assert at == GIVEN
        assert at.replace(tzinfo=None) == datetime(2026, 3, 3, 23, 36, 7, 891011)

        token = session.scalar(select(ApiToken))
        assert token is not None
        _assert_utc(token.expires_at)
        assert token.expires_at == GIVEN
        assert token.revoked_at is None

        # Defaults (``utcnow``) round-trip the same way.
        project = session.get(Project, seed.project_id)
        assert project is not None
        for value in (project.created_at, project.updated_at, token.created_at):
            _assert_utc(value)
        assert before - timedelta(seconds=5) < project.created_at <= after


def test_filters_compare_instants_not_wall_clock_text(sessions: sessionmaker[Session]) -> None:
    base = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    with transaction(sessions) as session:
        for hours in (0, 1, 2, 3):
            session.add(_event(base + timedelta(hours=hours), actor=f"h{hours}"))

    # 18:00 in India is 12:30 UTC: events at 13:00 and later qualify.
    since = datetime(2026, 1, 1, 18, 0, tzinfo=INDIA)
    with sessions() as session:
        page = AuditRepository(session).page(cursor=None, limit=10, since=since)
    assert sorted(event.actor for event in page.items) == ["h1", "h2", "h3"]


def test_a_naive_datetime_is_refused_on_write(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        session.add(_event(datetime(2026, 3, 4, 5, 6, 7)))
        with pytest.raises(StatementError, match="naive datetime") as raised:
            session.flush()
        session.rollback()
        session.add(_event(datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)))
        session.commit()  # the session is usable again, and the aware twin is accepted
    assert isinstance(raised.value.orig, ValueError)

    with sessions() as session:
        stored = session.scalars(select(AuditEvent.at)).all()
    assert stored == [datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)], "the naive one was not stored"


def test_a_naive_datetime_is_refused_in_a_query(sessions: sessionmaker[Session]) -> None:
    with sessions() as session, pytest.raises(StatementError, match="naive datetime") as raised:
        AuditRepository(session).page(cursor=None, limit=10, since=datetime(2026, 1, 1))
    assert isinstance(raised.value.orig, ValueError)
