"""Every error answer in one shape: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelyard.api.deps import app_state, origin_of
from modelyard.auth.principal import Principal
from modelyard.errors import (
    ConflictError,
    InvalidInputError,
    ModelyardError,
    PermissionDeniedError,
)
from modelyard.store.db import transaction
from modelyard.store.models import AuditEvent
from modelyard.store.repositories import ProjectRepository

logger = logging.getLogger("modelyard.api")

_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
_HTTP_CODES = {
    404: "http/not_found",
    405: "http/method_not_allowed",
    413: "request/too_large",
    415: "request/unsupported_media_type",
}


def error_response(error: ModelyardError, status: int | None = None) -> JSONResponse:
    return JSONResponse(error.to_body(), status_code=status or error.http_status)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ModelyardError, _modelyard_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(StaleDataError, _lost_race)


async def _lost_race(request: Request, exc: Exception) -> JSONResponse:
    """A row changed by another writer (a controller, say) between read and write."""
    return error_response(
        ConflictError(
            "the resource was changed by someone else at the same moment; read it again and retry",
            code="resource/version_conflict",
        )
    )


async def _modelyard_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ModelyardError)
    if isinstance(exc, PermissionDeniedError) and request.method not in _SAFE_METHODS:
        _audit_denied(request, exc)
    if exc.http_status >= 500:
        logger.error("request failed: %s", exc.message, extra={"code": exc.code})
    return error_response(exc)


def _audit_denied(request: Request, exc: PermissionDeniedError) -> None:
    """Refused mutations are audited too, outside the rolled-back transaction."""
    principal = getattr(request.state, "principal", None)
    actor = principal.name if isinstance(principal, Principal) else "anonymous"
    route = request.scope.get("route")
    state = app_state(request)
    origin = origin_of(request)
    params: dict[str, Any] = dict(request.path_params)
    project = params.get("project")
    with transaction(state.sessions) as session:
        record = ProjectRepository(session).by_name(project) if project else None
        session.add(
            AuditEvent(
                actor=actor,
                action=f"{request.method} {getattr(route, 'path', request.url.path)}",
                outcome="denied",
                project=project,
                project_id=record.id if record else None,
                resource_type=str(getattr(route, "name", "unknown")),
                resource_name=None,
                client_ip=origin.client_ip,
                user_agent=origin.user_agent,
                request_id=origin.request_id,
                details={"code": exc.code, "params": params},
            )
        )


def _clean_validation_errors(errors: Any) -> list[dict[str, Any]]:
    """Keep where and what; drop ``input`` and ``ctx``, which may echo a secret back."""
    return [
        {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": err.get("type")}
        for err in errors
    ]


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _clean_validation_errors(exc.errors())
    if any(err["type"] == "json_invalid" for err in errors):
        error = InvalidInputError(
            "the request body is not valid JSON",
            code="request/malformed_json",
            details={"errors": errors},
        )
        return error_response(error, 400)
    summary = "; ".join(
        f"{'.'.join(str(part) for part in err['loc'])}: {err['msg']}" for err in errors
    )
    error = InvalidInputError(
        f"invalid request: {summary}",
        code="request/invalid",
        details={"errors": errors},
    )
    return error_response(error)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http/{exc.status_code}")
    details = getattr(exc, "details", {})
    body = {"error": {"code": code, "message": str(exc.detail), "details": details}}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
