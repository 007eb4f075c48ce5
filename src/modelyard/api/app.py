"""The control-plane application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from sqlalchemy import Engine

from modelyard._version import __version__
from modelyard.api.deps import API_PREFIX
from modelyard.api.errors import install_error_handlers
from modelyard.api.middleware import RequestContextMiddleware
from modelyard.api.routes import (
    audit,
    deployments,
    health,
    projects,
    runs,
    schedules,
    secrets,
    tokens,
    training,
    users,
)
from modelyard.api.state import AppState
from modelyard.auth.oidc import OIDCVerifier
from modelyard.config import Settings
from modelyard.controllers import ControlPlane
from modelyard.monitoring.metrics import HttpMetrics
from modelyard.monitoring.tracing import create_tracer_provider
from modelyard.services.identity import Authenticator
from modelyard.store.db import create_store_engine, session_factory


def create_app(
    settings: Settings, *, engine: Engine | None = None, controllers: bool = False
) -> FastAPI:
    """Build the control-plane API for ``settings``.

    Args:
        settings: Platform settings; the store is opened lazily on the first request.
        engine: An engine to share (tests, the ``up`` command); one is created otherwise
            and disposed of when the app shuts down.
        controllers: Also run the scheduler and the run executor while the app is up
            (``modelyard up``).
    """
    owns_engine = engine is None
    store_engine = engine or create_store_engine(settings.resolved_database_url)
    tracer_provider = create_tracer_provider("modelyard-api")
    metrics = HttpMetrics()
    sessions = session_factory(store_engine)
    state = AppState(
        settings=settings,
        engine=store_engine,
        sessions=sessions,
        authenticator=Authenticator(
            settings=settings,
            oidc=OIDCVerifier(settings) if settings.oidc_enabled else None,
            sessions=sessions,
        ),
        metrics=metrics,
    )

    control = ControlPlane(settings, sessions) if controllers else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if control is not None:
            await anyio.to_thread.run_sync(control.start)
        try:
            yield
        finally:
            if control is not None:
                await anyio.to_thread.run_sync(control.stop)
        tracer_provider.shutdown()
        if owns_engine:
            store_engine.dispose()

    app = FastAPI(
        title="modelyard control plane",
        version=__version__,
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.modelyard = state
    install_error_handlers(app)
    app.include_router(health.router)
    for module in (
        users,
        tokens,
        projects,
        secrets,
        runs,
        schedules,
        training,
        deployments,
        audit,
    ):
        app.include_router(module.router)
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=tracer_provider, excluded_urls="healthz,readyz,metrics"
    )
    app.add_middleware(
        RequestContextMiddleware, metrics=metrics, max_body_bytes=settings.max_request_bytes
    )
    return app
