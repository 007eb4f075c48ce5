"""Shared fixtures: isolated settings, a migrated store, and a real HTTP server per test."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.fernet import Fernet
from sqlalchemy import Engine

from modelyard.api import create_app
from modelyard.config import Settings
from modelyard.monitoring.logging import configure_logging
from modelyard.services.tokens import issue_token
from modelyard.store import migrate
from modelyard.store.db import create_store_engine, session_factory, transaction
from modelyard.store.models import User
from tests.postgres import (
    create_postgres_database,
    database_url,
    drop_postgres_database,
    postgres_admin,
    wipe,
)
from tests.ray_cluster import ray_head, ray_runtime

__all__ = ["postgres_admin", "ray_head", "ray_runtime"]  # fixtures, shared with every test folder


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's MODELYARD_* variables, config or credentials."""
    for name in list(os.environ):
        if name.startswith(("MODELYARD_", "OTEL_", "MLFLOW_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("MODELYARD_HOME", str(tmp_path / "home"))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # MLflow sets them itself:
        monkeypatch.setenv(name, "")  # registered, so that the teardown removes them again
        monkeypatch.delenv(name)
    if "mlflow" in sys.modules:  # MLflow keeps a process-wide tracking URI and active run
        import mlflow

        while mlflow.active_run() is not None:
            mlflow.end_run()
        monkeypatch.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", None)
        monkeypatch.setattr("mlflow.tracking._model_registry.utils._registry_uri", None)


@pytest.fixture(scope="session")
def _migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "modelyard.db"
    engine = create_store_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", secret_key=Fernet.generate_key().decode())


@pytest.fixture(scope="session")
def _migrated_postgres_database(postgres_admin: Engine) -> Iterator[str]:
    """One PostgreSQL database for the whole run, migrated once; tests wipe it."""
    name = create_postgres_database(postgres_admin)
    url = database_url(name)
    store = create_store_engine(url)
    migrate.upgrade(store)
    store.dispose()
    yield url
    drop_postgres_database(postgres_admin, name)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.integration),
    ]
)
def engine(
    request: pytest.FixtureRequest, settings: Settings, _migrated_sqlite_template: Path
) -> Iterator[Engine]:
    """A migrated, empty store of this test's own, on SQLite and on PostgreSQL.

    SQLite: a copy of a migrated template file. PostgreSQL: the run's database, brought
    back to the head revision (a test may have downgraded it) and wiped.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    if request.param == "sqlite":
        shutil.copy(_migrated_sqlite_template, settings.home / "modelyard.db")
    else:
        settings.database_url = request.getfixturevalue("_migrated_postgres_database")
    store = create_store_engine(settings.resolved_database_url)
    if request.param == "postgresql":
        migrate.upgrade(store)
        wipe(store)
    yield store
    store.dispose()


class LiveServer:
    """uvicorn serving an app on a free loopback port, in a thread."""

    def __init__(self, app: object) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # As `modelyard up` runs by default: X-Forwarded-For is not trusted.
        config = uvicorn.Config(  # type: ignore[arg-type]
            app, log_config=None, lifespan="on", proxy_headers=False
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()


@dataclass
class Platform:
    """A running control plane and ways to make principals for it."""

    url: str
    settings: Settings
    engine: Engine
    admin_token: str

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def admin(self) -> httpx.Client:
        return self.client(self.admin_token)

    def user(self, name: str, *, superuser: bool = False, ttl_days: int = 30) -> str:
        """Create a user directly in the store and return a fresh API token for it."""
        with transaction(session_factory(self.engine)) as session:
            user = User(name=name, is_superuser=superuser)
            session.add(user)
            session.flush()
            return issue_token(session, user, "test", ttl_days).token


def start_platform(
    settings: Settings, engine: Engine, *, controllers: bool = False
) -> tuple[LiveServer, Platform]:
    server = LiveServer(create_app(settings, engine=engine, controllers=controllers))
    server.start()
    platform = Platform(url=server.url, settings=settings, engine=engine, admin_token="")
    platform.admin_token = platform.user("admin", superuser=True)
    return server, platform


@pytest.fixture
def platform(settings: Settings, engine: Engine) -> Iterator[Platform]:
    server, running = start_platform(settings, engine)
    yield running
    server.stop()


MakeProject = Callable[..., httpx.Response]


@pytest.fixture
def make_project(platform: Platform) -> MakeProject:
    """Create a project as the superuser, with ``members`` as ``{user: role}``."""

    def make(name: str, members: dict[str, str] | None = None) -> httpx.Response:
        with platform.admin() as admin:
            response = admin.post("/api/v1/projects", json={"name": name})
            response.raise_for_status()
            for user, role in (members or {}).items():
                added = admin.post(
                    f"/api/v1/projects/{name}/members", json={"user": user, "role": role}
                )
                added.raise_for_status()
        return response

    return make


class JsonLogs:
    """What the platform's loggers wrote, as configured for production (JSON lines)."""

    def __init__(self, stream: io.StringIO) -> None:
        self._stream = stream

    def text(self) -> str:
        return self._stream.getvalue()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines() if line.strip()]


@pytest.fixture
def json_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[JsonLogs]:
    names = ("modelyard", "uvicorn", "uvicorn.error", "uvicorn.access")
    saved = {
        name: (
            list(logging.getLogger(name).handlers),
            logging.getLogger(name).level,
            logging.getLogger(name).propagate,
            logging.getLogger(name).disabled,
        )
        for name in names
    }
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    configure_logging("DEBUG", json_output=True)
    monkeypatch.undo()
    yield JsonLogs(stream)
    for name, (handlers, level, propagate, disabled) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
        logger.disabled = disabled
