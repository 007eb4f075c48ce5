"""Store fixtures: every test that uses a database runs on SQLite and on PostgreSQL.

``database`` is a fresh, empty database for one test: a SQLite file under ``tmp_path``,
or a uniquely named PostgreSQL database created for the test and dropped after it.
``migrated_database`` (and ``store_engine`` and ``sessions`` on it) is a database that
``migrate.upgrade`` brought to head once per test module; it is wiped before every test,
so each test still starts from empty tables (creating and migrating a PostgreSQL
database for every test would make the suite several times slower).
PostgreSQL comes from ``MODELYARD_TEST_POSTGRES_URL`` (default: the loopback server that
``make services`` starts). When it cannot be reached its tests skip, except under
``CI=true``, where they fail: a silently skipped backend would hide regressions.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from modelyard.store import migrate
from modelyard.store.db import create_store_engine, session_factory, transaction
from modelyard.store.models import Base, Project, RoleBinding, Secret, User

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
# Read once, at import: the root conftest removes MODELYARD_* variables for every test.
POSTGRES_URL = os.environ.get("MODELYARD_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
POSTGRES_CONNECT_TIMEOUT_S = 5

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.integration),
]


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


@dataclass
class Database:
    """A database of one backend, reached through engines this object keeps track of.

    Engines made through :meth:`engine` are disposed by :meth:`dispose`, which the
    fixtures call before the database is removed (or, for a module's database, after
    each test).
    """

    backend: str
    url: str
    _engines: list[Engine] = field(default_factory=list)

    def engine(self, **kwargs: Any) -> Engine:
        engine = create_store_engine(self.url, **kwargs)
        self._engines.append(engine)
        return engine

    def dispose(self) -> None:
        for engine in self._engines:
            engine.dispose()
        self._engines.clear()


def _create_postgres_database(admin: Engine) -> str:
    name = f"modelyard_test_{uuid.uuid4().hex}"
    quoted = admin.dialect.identifier_preparer.quote(name)
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {quoted}")
    return name


def _drop_postgres_database(admin: Engine, name: str) -> None:
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


@contextmanager
def _fresh_database(
    backend: str, request: pytest.FixtureRequest, folder: Path
) -> Iterator[Database]:
    """An empty database; afterwards its engines are disposed and it is removed."""
    if backend == "sqlite":
        # A folder that does not exist yet: the engine must create it.
        sqlite = Database("sqlite", f"sqlite:///{folder / 'store' / 'modelyard.db'}")
        try:
            yield sqlite
        finally:
            sqlite.dispose()
    else:
        admin: Engine = request.getfixturevalue("postgres_admin")
        name = _create_postgres_database(admin)
        url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
        postgres = Database("postgresql", url)
        try:
            yield postgres
        finally:
            postgres.dispose()
            _drop_postgres_database(admin, name)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """``"sqlite"`` or ``"postgresql"``: every test that uses a database runs on both."""
    return str(request.param)


@pytest.fixture
def database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A fresh, empty database (no tables at all) for this test alone."""
    with _fresh_database(backend, request, tmp_path) as fresh:
        yield fresh


@pytest.fixture(scope="module")
def _module_database(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    """A database of this module, migrated to head once."""
    with _fresh_database(backend, request, tmp_path_factory.mktemp("store")) as fresh:
        migrate.upgrade(fresh.engine())
        fresh.dispose()  # tests make their own engines
        yield fresh


def _wipe(engine: Engine) -> None:
    """Delete every row of every model table (the schema and its revision stay)."""
    tables = Base.metadata.sorted_tables
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # Fail, rather than hang, if a previous test left a transaction open.
            connection.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
            quote = engine.dialect.identifier_preparer.quote
            connection.exec_driver_sql(f"TRUNCATE {', '.join(quote(t.name) for t in tables)}")
        else:
            for table in reversed(tables):
                connection.execute(table.delete())


@pytest.fixture
def migrated_database(_module_database: Database) -> Iterator[Database]:
    """A database at the head revision whose tables are all empty; engines are per test."""
    database = Database(_module_database.backend, _module_database.url)
    _wipe(database.engine())
    yield database
    database.dispose()


@pytest.fixture
def store_engine(migrated_database: Database) -> Engine:
    return migrated_database.engine()


@pytest.fixture
def sessions(store_engine: Engine) -> sessionmaker[Session]:
    return session_factory(store_engine)


@dataclass(frozen=True)
class Seed:
    """Ids of a small, committed data set: two users, two projects, a binding, a secret."""

    user_id: str
    other_user_id: str
    project_id: str
    other_project_id: str
    role_binding_id: str
    secret_id: str


@pytest.fixture
def seed(sessions: sessionmaker[Session]) -> Seed:
    with transaction(sessions) as session:
        ada, bob = User(name="ada", display_name="Ada"), User(name="bob")
        alpha, beta = Project(name="alpha"), Project(name="beta")
        session.add_all([ada, bob, alpha, beta])
        session.flush()
        binding = RoleBinding(project_id=alpha.id, user_id=ada.id, role="viewer")
        secret = Secret(project_id=alpha.id, name="api-key", ciphertext=b"sealed")
        session.add_all([binding, secret])
        session.flush()
        return Seed(
            user_id=ada.id,
            other_user_id=bob.id,
            project_id=alpha.id,
            other_project_id=beta.id,
            role_binding_id=binding.id,
            secret_id=secret.id,
        )


def violated_constraint(error: IntegrityError) -> str:
    """Which kind of constraint an IntegrityError reports: ``unique``, ``foreign_key``, ...

    Lets a test tell the violation it provoked from an unrelated one (say, a NOT NULL).
    """
    original = error.orig
    sqlstate = getattr(original, "sqlstate", None)
    if sqlstate is not None:  # psycopg
        kinds = {"23505": "unique", "23503": "foreign_key", "23502": "not_null", "23514": "check"}
        return kinds.get(str(sqlstate), str(sqlstate))
    message = str(original)
    for marker, kind in (
        ("UNIQUE constraint failed", "unique"),
        ("FOREIGN KEY constraint failed", "foreign_key"),
        ("NOT NULL constraint failed", "not_null"),
        ("CHECK constraint failed", "check"),
    ):
        if marker in message:
            return kind
    return message
