"""Alembic migrations: upgrade, downgrade, and agreement with the SQLAlchemy models."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, select

from modelyard.store import migrate
from modelyard.store.db import session_factory, transaction
from modelyard.store.models import Base, Project
from tests.store.conftest import Database

MODEL_TABLES = set(Base.metadata.tables)


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def _scripts() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", migrate.SCRIPT_LOCATION)
    return ScriptDirectory.from_config(config)


def _schema_differences(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def test_upgrade_from_empty_creates_every_model_table(database: Database) -> None:
    engine = database.engine()
    assert _tables(engine) == set()
    assert migrate.current_revision(engine) is None
    assert not migrate.is_current(engine)

    migrate.upgrade(engine)

    assert {
        "users",
        "projects",
        "role_bindings",
        "api_tokens",
        "secrets",
        "audit_events",
        "secret_key_lock",
        "pipeline_runs",
        "task_runs",
        "task_attempts",
        "task_cache",
        "artifact_links",
        "pools",
        "schedules",
        "training_jobs",
        "training_attempts",
        "deployments",
        "deployment_revisions",
        "deployment_replicas",
    } == MODEL_TABLES
    assert _tables(engine) == MODEL_TABLES | {"alembic_version"}
    assert migrate.current_revision(engine) == migrate.head_revision(engine)
    assert migrate.is_current(engine)


def test_upgrade_at_head_changes_nothing(database: Database) -> None:
    engine = database.engine()
    migrate.upgrade(engine)
    with transaction(session_factory(engine)) as session:
        session.add(Project(name="kept"))

    migrate.upgrade(engine)

    assert migrate.is_current(engine)
    with session_factory(engine)() as session:
        assert session.scalars(select(Project.name)).all() == ["kept"]


def test_downgrade_goes_one_step_down_and_upgrade_comes_back(database: Database) -> None:
    engine = database.engine()
    migrate.upgrade(engine)
    head = migrate.head_revision(engine)
    assert head is not None

    # Walk every revision down to the empty schema, one step at a time.
    revision: str | None = head
    while revision is not None:
        below = _scripts().get_revision(revision).down_revision
        assert below is None or isinstance(below, str), "merge revisions are not expected"
        migrate.downgrade(engine, "-1")
        assert migrate.current_revision(engine) == below
        assert not migrate.is_current(engine)
        revision = below

    assert _tables(engine) & MODEL_TABLES == set()

    migrate.upgrade(engine)

    assert migrate.is_current(engine)
    assert _tables(engine) >= MODEL_TABLES
    assert _schema_differences(engine) == []
    with transaction(session_factory(engine)) as session:
        session.add(Project(name="after-the-round-trip"))
    with session_factory(engine)() as session:
        assert session.scalars(select(Project.name)).all() == ["after-the-round-trip"]


def test_migrations_match_the_models(database: Database) -> None:
    engine = database.engine()
    # The comparison is live: against an empty database it wants every table added.
    added = {diff[1].name for diff in _schema_differences(engine) if diff[0] == "add_table"}
    assert added == MODEL_TABLES

    migrate.upgrade(engine)

    assert _schema_differences(engine) == []
