"""Engine and session construction for SQLite (embedded) and PostgreSQL (production)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 10_000


def create_store_engine(url: str, **kwargs: Any) -> Engine:
    """Build an engine with the connection settings modelyard relies on.

    SQLite gets WAL journaling, a busy timeout and foreign keys; its parent folder is
    created on the first connection. PostgreSQL URLs without a driver use psycopg 3.

    SQLite keeps the sqlite3 module's transaction handling: a transaction starts at the
    first write, so reads never hold a snapshot that a later write would find stale, and
    concurrent requests wait for the write lock instead of failing. Code that needs a
    nested transaction (SAVEPOINT) must not rely on it to stay uncommitted on SQLite.
    """
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"check_same_thread": False}, **kwargs)
        database = parsed.database
        if database and database != ":memory:":
            # Created on first connect, not here: building an engine has no side effects.
            folder = Path(database).parent
            event.listen(engine, "do_connect", lambda *_: folder.mkdir(parents=True, exist_ok=True))
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@contextmanager
def opened_engine(url: str) -> Iterator[Engine]:
    """An engine for one command's work, disposed of afterwards."""
    engine = create_store_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception."""
    with factory() as session, session.begin():
        yield session
