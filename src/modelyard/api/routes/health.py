"""Liveness, readiness (the store answers and its schema is current) and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from modelyard.api.deps import app_state
from modelyard.store.migrate import is_current

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    state = app_state(request)
    checks: dict[str, Any] = {}
    try:
        with state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["store"] = "ok"
        checks["schema"] = (
            "ok" if is_current(state.engine) else "outdated: run 'modelyard db upgrade'"
        )
    except SQLAlchemyError as exc:
        checks["store"] = f"unreachable: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    if ready:
        return JSONResponse({"status": "ready", "checks": checks})
    body = {
        "error": {
            "code": "server/not_ready",
            "message": "the server is not ready",
            "details": checks,
        }
    }
    return JSONResponse(body, status_code=503)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    registry = app_state(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
