"""A real PostgreSQL for the tests: the admin engine, throw-away databases, wiping.

PostgreSQL comes from ``MODELYARD_TEST_POSTGRES_URL`` (default: the loopback server that
``make services`` starts). When it cannot be reached its tests skip, except under
``CI=true``, where they fail: a silently skipped backend would hide regressions.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import NoReturn

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from modelyard.store.db import create_store_engine
from modelyard.store.models import Base

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
# Read once, at import: the root conftest removes MODELYARD_* variables for every test.
POSTGRES_URL = os.environ.get("MODELYARD_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
POSTGRES_CONNECT_TIMEOUT_S = 5


def shown_url(url: str) -> str:
    """``url`` with any password masked, fit for a skip reason or a failure message."""
    return make_url(url).render_as_string(hide_password=True)


def postgres_unavailable(reason: str) -> NoReturn:
    """Skip a PostgreSQL test, or fail it under ``CI=true``."""
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(
            f"{reason}. CI=true, so the PostgreSQL store backend must not be skipped.",
            pytrace=False,
        )
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """An AUTOCOMMIT engine on the PostgreSQL admin URL, for CREATE/DROP DATABASE."""
    problem: str | None = None
    try:
        admin = create_store_engine(
            POSTGRES_URL,
            isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S},
        )
    except (SQLAlchemyError, ImportError) as exc:
        postgres_unavailable(f"cannot use PostgreSQL URL {shown_url(POSTGRES_URL)}: {exc}")
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        first_line = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        problem = (
            f"PostgreSQL at {shown_url(POSTGRES_URL)} is not reachable ({first_line}); "
            "start it with `make services` or point MODELYARD_TEST_POSTGRES_URL at one"
        )
    if problem is not None:
        admin.dispose()
        postgres_unavailable(problem)
    yield admin
    admin.dispose()


def create_postgres_database(admin: Engine) -> str:
    name = f"modelyard_test_{uuid.uuid4().hex}"
    quoted = admin.dialect.identifier_preparer.quote(name)
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {quoted}")
    return name


def drop_postgres_database(admin: Engine, name: str) -> None:
    quoted = admin.dialect.identifier_preparer.quote(name)
    with admin.connect() as connection:
        connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": name},
        )
        connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted}")


def wipe(engine: Engine) -> None:
    """Delete every row of every data table (the schema, its revision and the secret key
    lock row, which migrations create, stay)."""
    tables = [t for t in Base.metadata.sorted_tables if t.name != "secret_key_lock"]
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # Fail, rather than hang, if a previous test left a transaction open.
            connection.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
            quote = engine.dialect.identifier_preparer.quote
            connection.exec_driver_sql(f"TRUNCATE {', '.join(quote(t.name) for t in tables)}")
        else:
            for table in reversed(tables):
                connection.execute(table.delete())


def database_url(name: str) -> str:
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
