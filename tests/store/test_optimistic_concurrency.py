"""Optimistic concurrency: the ``version`` column turns lost updates into errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from modelyard.auth.principal import Origin, Principal
from modelyard.config import Settings
from modelyard.errors import ConflictError
from modelyard.services.context import ServiceContext
from modelyard.store.db import transaction
from modelyard.store.models import Project, RoleBinding, Secret, User, Versioned
from tests.store.conftest import Seed


@dataclass(frozen=True)
class Case:
    """One versioned resource, which of its attributes to change, and a value per attempt."""

    model: type[Project | Secret | RoleBinding | User]
    attribute: str
    value: Callable[[int], Any]
    pk: Callable[[Seed], str]


CASES = [
    pytest.param(
        Case(Project, "description", lambda n: f"description {n}", lambda s: s.project_id),
        id="project",
    ),
    pytest.param(
        Case(Secret, "ciphertext", lambda n: f"sealed {n}".encode(), lambda s: s.secret_id),
        id="secret",
    ),
    pytest.param(
        Case(
            RoleBinding,
            "role",
            lambda n: ("viewer", "editor", "admin")[n % 3],  # seeded as "viewer"
            lambda s: s.role_binding_id,
        ),
        id="role_binding",
    ),
    pytest.param(
        Case(User, "display_name", lambda n: f"Ada {n}", lambda s: s.user_id),
        id="user",
    ),
]


def _stored_version(session: Session, case: Case, pk: str) -> int | None:
    return session.scalar(select(case.model.version).where(case.model.id == pk))


def _load(session: Session, case: Case, pk: str) -> Versioned:
    row = session.get(case.model, pk)
    assert isinstance(row, Versioned)
    return row


@pytest.mark.parametrize("case", CASES)
def test_second_writer_of_a_stale_row_gets_stale_data_error(
    sessions: sessionmaker[Session], seed: Seed, case: Case
) -> None:
    pk = case.pk(seed)
    with sessions() as first, sessions() as second:
        mine = _load(first, case, pk)
        theirs = _load(second, case, pk)
        assert mine.version == theirs.version == 1

        setattr(mine, case.attribute, case.value(1))
        setattr(theirs, case.attribute, case.value(2))
        first.commit()
        assert mine.version == 2

        with pytest.raises(StaleDataError):
            second.flush()
        second.rollback()

    with sessions() as check:
        stored = _load(check, case, pk)
        assert getattr(stored, case.attribute) == case.value(1), "the first write must survive"
        assert _stored_version(check, case, pk) == 2


@pytest.mark.parametrize("case", CASES)
def test_every_update_bumps_the_version_by_one(
    sessions: sessionmaker[Session], seed: Seed, case: Case
) -> None:
    pk = case.pk(seed)
    with sessions() as session:
        created = _load(session, case, pk)
        created_at, last_updated_at = created.created_at, created.updated_at
        assert _stored_version(session, case, pk) == 1

    for expected, n in ((2, 10), (3, 11), (4, 12)):
        with transaction(sessions) as session:
            setattr(_load(session, case, pk), case.attribute, case.value(n))
        with sessions() as session:
            assert _stored_version(session, case, pk) == expected
            row = _load(session, case, pk)
            assert row.created_at == created_at
            assert row.updated_at > last_updated_at
            last_updated_at = row.updated_at

    with transaction(sessions) as session:
        row = _load(session, case, pk)
        setattr(row, case.attribute, getattr(row, case.attribute))  # no real change
    with sessions() as session:
        assert _stored_version(session, case, pk) == 4, "a no-op must not bump the version"


def _context(session: Session, settings: Settings) -> ServiceContext:
    principal = Principal(user_id="0" * 29, name="tester", is_superuser=True, via="local")
    origin = Origin(client_ip="127.0.0.1", user_agent="pytest", request_id="req-1")
    return ServiceContext(session=session, principal=principal, origin=origin, settings=settings)


def test_service_context_reports_a_lost_race_as_version_conflict(
    sessions: sessionmaker[Session], seed: Seed, settings: Settings
) -> None:
    with sessions() as first, sessions() as second:
        mine = first.get(Project, seed.project_id)
        theirs = second.get(Project, seed.project_id)
        assert mine is not None
        assert theirs is not None
        mine.description = "mine"
        theirs.description = "theirs"
        first.commit()

        with pytest.raises(ConflictError) as raised:
            _context(second, settings).flush("project 'alpha'")
        second.rollback()

    assert raised.value.code == "resource/version_conflict"
    assert raised.value.http_status == 409
    assert "project 'alpha'" in raised.value.message
    assert isinstance(raised.value.__cause__, StaleDataError)
    with sessions() as check:
        assert check.scalar(select(Project.description).where(Project.name == "alpha")) == "mine"


def test_service_context_reports_a_duplicate_name_as_already_exists(
    sessions: sessionmaker[Session], seed: Seed, settings: Settings
) -> None:
    with sessions() as session:
        context = _context(session, settings)
        session.add(Project(name="alpha"))
        with pytest.raises(ConflictError) as raised:
            context.flush("project 'alpha'")
        session.rollback()

    assert raised.value.code == "resource/already_exists"
    assert raised.value.http_status == 409
    assert isinstance(raised.value.__cause__, IntegrityError)
    with sessions() as check:
        assert check.scalars(select(Project.id).where(Project.name == "alpha")).all() == [
            seed.project_id
        ]


def test_service_context_reports_a_missing_parent_as_an_integrity_violation(
    sessions: sessionmaker[Session], seed: Seed, settings: Settings
) -> None:
    with sessions() as session:
        context = _context(session, settings)
        session.add(RoleBinding(project_id="no-such-project", user_id=seed.user_id, role="viewer"))
        with pytest.raises(ConflictError) as raised:
            context.flush("membership of 'bob'")
        session.rollback()

    assert raised.value.code == "resource/integrity_violation"
    assert "no longer exists" in raised.value.message


def test_service_context_flush_writes_pending_changes(
    sessions: sessionmaker[Session], seed: Seed, settings: Settings
) -> None:
    with sessions() as session:
        context = _context(session, settings)
        project = session.get(Project, seed.project_id)
        assert project is not None
        project.description = "flushed"
        context.audit("project.update", "project", "alpha", project=project)
        context.flush("project 'alpha'")
        assert project.version == 2
        session.commit()

    with sessions() as check:
        assert check.scalar(select(Project.version).where(Project.name == "alpha")) == 2
