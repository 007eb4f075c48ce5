"""Keyset pagination through the repositories."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from modelyard.errors import InvalidInputError
from modelyard.store.db import transaction
from modelyard.store.models import AuditEvent, Project
from modelyard.store.pagination import MAX_LIMIT, Page, encode_cursor
from modelyard.store.repositories import AuditRepository, ProjectRepository


def _insert_projects(sessions: sessionmaker[Session], names: list[str]) -> None:
    # One flush per row: each row gets its id (and so its place in the order) in turn.
    with transaction(sessions) as session:
        for name in names:
            session.add(Project(name=name))
            session.flush()


def _all_pages(fetch: Callable[[str | None], Page[Any]]) -> list[Page[Any]]:
    pages, cursor = [], None
    while True:
        page = fetch(cursor)
        pages.append(page)
        cursor = page.next_cursor
        if cursor is None:
            return pages
        assert len(pages) < 100, "pagination does not terminate"


def _project_pages(sessions: sessionmaker[Session], limit: int) -> list[Page[Project]]:
    def fetch(cursor: str | None) -> Page[Project]:
        with sessions() as session:
            return ProjectRepository(session).page(cursor=cursor, limit=limit)

    return _all_pages(fetch)


@pytest.mark.parametrize(
    ("count", "sizes"),
    [(23, [10, 10, 3]), (20, [10, 10]), (9, [9]), (0, [0])],
)
def test_projects_page_through_in_insertion_order(
    sessions: sessionmaker[Session], count: int, sizes: list[int]
) -> None:
    names = [f"project-{n:02d}" for n in range(count)]
    _insert_projects(sessions, names)

    pages = _project_pages(sessions, limit=10)

    assert [len(page.items) for page in pages] == sizes
    seen = [project.name for page in pages for project in page.items]
    assert len(set(seen)) == len(seen), "a project showed up twice"
    assert seen == names
    assert all(page.next_cursor is not None for page in pages[:-1])
    assert pages[-1].next_cursor is None


def test_rows_added_while_paging_show_up_later_and_nothing_repeats(
    sessions: sessionmaker[Session],
) -> None:
    _insert_projects(sessions, [f"early-{n}" for n in range(5)])
    with sessions() as session:
        first = ProjectRepository(session).page(cursor=None, limit=3)
    _insert_projects(sessions, ["late"])
    with sessions() as session:
        rest = ProjectRepository(session).page(cursor=first.next_cursor, limit=10)

    assert [p.name for p in first.items] == ["early-0", "early-1", "early-2"]
    assert [p.name for p in rest.items] == ["early-3", "early-4", "late"]
    assert rest.next_cursor is None


def test_the_limit_is_clamped(sessions: sessionmaker[Session]) -> None:
    _insert_projects(sessions, ["a", "b"])
    with sessions() as session:
        repository = ProjectRepository(session)
        assert len(repository.page(cursor=None, limit=0).items) == 1
        assert len(repository.page(cursor=None, limit=-5).items) == 1
        assert len(repository.page(cursor=None, limit=MAX_LIMIT * 10).items) == 2


def test_audit_events_page_newest_first(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        for n in range(15):
            session.add(
                AuditEvent(
                    actor=f"actor-{n:02d}",
                    action="project.update",
                    resource_type="project",
                    project="even" if n % 2 == 0 else "odd",
                )
            )
            session.flush()

    def fetch(cursor: str | None, project: str | None = None) -> Page[AuditEvent]:
        with sessions() as session:
            return AuditRepository(session).page(cursor=cursor, limit=10, project_name=project)

    pages = _all_pages(fetch)
    assert [len(page.items) for page in pages] == [10, 5]
    actors = [event.actor for page in pages for event in page.items]
    assert actors == [f"actor-{n:02d}" for n in reversed(range(15))]
    stamps = [event.at for page in pages for event in page.items]
    assert stamps == sorted(stamps, reverse=True)

    odd = _all_pages(lambda cursor: fetch(cursor, project="odd"))
    assert [event.actor for page in odd for event in page.items] == [
        f"actor-{n:02d}" for n in (13, 11, 9, 7, 5, 3, 1)
    ]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


GARBAGE_CURSORS = {
    "not-base64": "garbage!",
    "bad-padding": "a",
    "not-utf8": _b64(b"\xff\xfe\xfd"),
    "not-json": _b64(b"{not json"),
    "json-list": _b64(b"[1, 2]"),
    "json-string": _b64(b'"after"'),
    "no-after-key": _b64(json.dumps({"before": "x"}).encode()),
    "after-not-a-string": _b64(json.dumps({"after": 5}).encode()),
    "after-null": _b64(json.dumps({"after": None}).encode()),
}


def test_a_garbage_cursor_is_invalid_input(
    sessions: sessionmaker[Session], subtests: pytest.Subtests
) -> None:
    _insert_projects(sessions, ["a"])
    for label, cursor in GARBAGE_CURSORS.items():
        with subtests.test(cursor=label), sessions() as session:
            with pytest.raises(InvalidInputError) as raised:
                ProjectRepository(session).page(cursor=cursor, limit=10)
            assert raised.value.code == "request/invalid_cursor"
            assert raised.value.http_status == 422


def test_a_forged_cursor_with_a_nul_byte_is_invalid_input(sessions: sessionmaker[Session]) -> None:
    with sessions() as session, pytest.raises(InvalidInputError) as raised:
        ProjectRepository(session).page(cursor=encode_cursor("\x00"), limit=10)
    assert raised.value.code == "request/invalid_cursor"
