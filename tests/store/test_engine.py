"""Engine construction: SQLite connection settings, concurrent SQLite writers, URL handling."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from modelyard.store import migrate
from modelyard.store.db import SQLITE_BUSY_TIMEOUT_MS, create_store_engine, session_factory
from modelyard.store.db import transaction as unit_of_work
from modelyard.store.models import AuditEvent, Project
from modelyard.store.repositories import AuditRepository, ProjectRepository
from tests.postgres import postgres_unavailable


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'deep' / 'er' / 'modelyard.db'}")
    yield engine
    engine.dispose()


# ---- SQLite connection settings -----------------------------------------------------------


def test_every_sqlite_connection_gets_wal_foreign_keys_and_busy_timeout(
    sqlite_engine: Engine,
) -> None:
    assert SQLITE_BUSY_TIMEOUT_MS == 10_000
    # Two connections open at once: the pool's second connection is configured too.
    with sqlite_engine.connect() as first, sqlite_engine.connect() as second:
        for connection in (first, second):
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA busy_timeout").scalar() == 10_000
            assert pragma("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_the_sqlite_folder_is_created(tmp_path: Path) -> None:
    folder = tmp_path / "not" / "there" / "yet"
    engine = create_store_engine(f"sqlite:///{folder / 'modelyard.db'}")
    try:
        assert not folder.exists(), "building an engine has no side effects"
        migrate.upgrade(engine)
        assert folder.is_dir()
        assert (folder / "modelyard.db").is_file()
    finally:
        engine.dispose()


def test_a_relative_sqlite_path_is_created_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    engine = create_store_engine("sqlite:///relative/folder/modelyard.db")
    try:
        with engine.connect():
            pass
        assert (tmp_path / "relative" / "folder").is_dir()
    finally:
        engine.dispose()


def test_an_in_memory_sqlite_store_creates_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite://", "sqlite:///:memory:"):
        engine = create_store_engine(url)
        try:
            with engine.connect() as connection:
                assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        finally:
            engine.dispose()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://modelyard@db.example:5432/modelyard",
        "postgresql+psycopg://modelyard@db.example:5432/modelyard",
    ],
)
def test_postgresql_urls_use_psycopg_3(url: str) -> None:
    engine = create_store_engine(url)  # engines connect lazily: no server needed
    try:
        assert engine.url.drivername == "postgresql+psycopg"
        assert engine.dialect.driver == "psycopg"
        assert engine.url.host == "db.example"
        assert engine.url.database == "modelyard"
    finally:
        engine.dispose()


# ---- concurrent writers on SQLite ---------------------------------------------------------


def test_concurrent_sqlite_writers_wait_for_each_other_instead_of_failing(
    sqlite_engine: Engine,
) -> None:
    migrate.upgrade(sqlite_engine)
    sessions = session_factory(sqlite_engine)
    with unit_of_work(sessions) as session:
        session.add(Project(name="shared"))

    writers, events_each = 6, 20
    start = threading.Barrier(writers + 1)
    lock_held = threading.Event()
    committed: list[str] = []
    errors: list[BaseException] = []
    seen_while_locked: list[int] = []

    def hold_the_write_lock() -> None:
        """One long transaction: while it holds SQLite's write lock, nobody else commits."""
        try:
            with unit_of_work(sessions) as session:
                AuditRepository(session).add(
                    AuditEvent(actor="holder", action="hold", resource_type="lock")
                )
                session.flush()  # takes the write lock
                lock_held.set()
                start.wait(timeout=10)
                time.sleep(0.3)  # the writers are now queueing on the busy timeout
                seen_while_locked.append(len(committed))
            committed.append("holder")
        except BaseException as exc:
            errors.append(exc)
            lock_held.set()

    def write(writer: int) -> None:
        try:
            lock_held.wait(timeout=10)
            start.wait(timeout=10)
            for n in range(events_each):
                with unit_of_work(sessions) as session:  # read, then write: like a service
                    assert ProjectRepository(session).by_name("shared") is not None
                    AuditRepository(session).add(
                        AuditEvent(
                            actor=f"writer-{writer}",
                            action="project.update",
                            resource_type="project",
                            details={"n": n},
                        )
                    )
                committed.append(f"writer-{writer}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hold_the_write_lock)]
    threads += [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)

    assert errors == [], f"writers failed: {errors!r}"
    assert seen_while_locked == [0], "someone committed while another held the write lock"
    with sessions() as session:
        stored = session.scalar(select(func.count()).select_from(AuditEvent))
        rows = session.execute(select(AuditEvent.actor, func.count()).group_by(AuditEvent.actor))
        per_writer = {actor: count for actor, count in rows}
    assert stored == writers * events_each + 1
    assert per_writer == {"holder": 1} | {f"writer-{w}": events_each for w in range(writers)}


# ---- PostgreSQL availability --------------------------------------------------------------


def test_an_unreachable_postgresql_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not reachable"):
        postgres_unavailable("PostgreSQL at x is not reachable")


@pytest.mark.parametrize("ci", ["true", "TRUE"])
def test_an_unreachable_postgresql_fails_under_ci(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="must not be skipped"):
        postgres_unavailable("PostgreSQL at x is not reachable")
