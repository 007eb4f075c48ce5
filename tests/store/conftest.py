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

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from modelyard.store import migrate
from modelyard.store.db import create_store_engine, session_factory, transaction
from modelyard.store.models import Project, RoleBinding, Secret, User
from tests.postgres import (
    create_postgres_database,
    database_url,
    drop_postgres_database,
    wipe,
)

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.integration),
]


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
        name = create_postgres_database(admin)
        url = database_url(name)
        postgres = Database("postgresql", url)
        try:
            yield postgres
        finally:
            postgres.dispose()
            drop_postgres_database(admin, name)


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


@pytest.fixture
def migrated_database(_module_database: Database) -> Iterator[Database]:
    """A database at the head revision whose tables are all empty; engines are per test."""
    database = Database(_module_database.backend, _module_database.url)
    wipe(database.engine())
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
