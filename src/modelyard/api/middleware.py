"""One ASGI middleware for every request: request id, metrics, access log, last-resort 500."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelyard.monitoring.logging import request_id_var
from modelyard.monitoring.metrics import HttpMetrics

access_log = logging.getLogger("modelyard.access")
logger = logging.getLogger("modelyard.api")

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_UNMATCHED = "<unmatched>"


class RequestContextMiddleware:
    """Tags each request with an ``X-Request-ID`` (the caller's, if well-formed), measures
    it by route template, writes one access-log line, and turns an unhandled exception
    into a 500 in the error shape so the caller still gets the request id."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        self.metrics.inflight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unhandled error")
            if not response_started:
                await _send_internal_error(send_with_id, request_id)
        finally:
            self.metrics.inflight.dec()
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", _UNMATCHED)
            self.metrics.observe(scope["method"], route, status, elapsed)
            access_log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "client": (scope.get("client") or (None,))[0],
                },
            )
            request_id_var.reset(token)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = str(value.decode("latin-1"))
            if _VALID_REQUEST_ID.match(candidate):
                return candidate
            break
    return uuid.uuid4().hex


async def _send_internal_error(send: Any, request_id: str) -> None:
    body = json.dumps(
        {
            "error": {
                "code": "internal/error",
                "message": "the server failed to answer; the request id tells an operator where "
                "to look",
                "details": {"request_id": request_id},
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
