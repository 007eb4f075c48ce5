"""The engine on this machine: a warm worker pool, the configured store and secrets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelyard.artifacts import from_settings
from modelyard.auth.secret_box import load_box
from modelyard.config import Settings
from modelyard.pipelines.engine import EngineSettings, RunEngine
from modelyard.runtimes import open_runtime
from modelyard.runtimes.local.pool import PIPELINE_PRELOAD
from modelyard.store.models import Secret
from modelyard.training.tracking import TrackingConfig, mlflow_available

SecretLookup = Callable[[str, tuple[str, ...]], dict[str, str]]
WORKER_PRELOAD = PIPELINE_PRELOAD  # what warm workers import before their first task


def secret_lookup(settings: Settings, sessions: sessionmaker[Session]) -> SecretLookup:
    """A function giving a project's secret values by name, decrypted for injection."""

    def lookup(project_id: str, names: tuple[str, ...]) -> dict[str, str]:
        if not names:
            return {}
        box = load_box(settings)
        with sessions() as session:
            rows = session.scalars(
                select(Secret).where(Secret.project_id == project_id, Secret.name.in_(names))
            )
            return {row.name: box.decrypt(row.ciphertext) for row in rows}

    return lookup


@contextmanager
def local_engine(
    settings: Settings, sessions: sessionmaker[Session], workers: int | None = None
) -> Iterator[RunEngine]:
    """A run engine with its own worker pool (``workers`` processes, else
    ``settings.workers``, else one per core) and the other runtimes runs ask for (Ray),
    opened on first use; all closed on exit."""
    store = from_settings(settings)
    engine_settings = EngineSettings(
        artifacts_url=settings.resolved_artifacts_url,
        logs_dir=settings.home / "logs",
        tracking=TrackingConfig.from_settings(settings) if mlflow_available() else None,
    )
    pool = open_runtime("local", settings, workers)
    try:
        engine = RunEngine(
            sessions,
            pool,
            store,
            engine_settings,
            secrets=secret_lookup(settings, sessions),
            open_runtime=lambda name: open_runtime(name, settings, workers),
        )
        try:
            yield engine
        finally:
            engine.close()
    finally:
        pool.close()
