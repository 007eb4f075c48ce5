"""One ASGI middleware for every request: request id, metrics, access log, last-resort 500."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelyard.monitoring.logging import request_id_var
from modelyard.monitoring.metrics import HttpMetrics

access_log = logging.getLogger("modelyard.access")
logger = logging.getLogger("modelyard.api")

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_UNMATCHED = "<unmatched>"


class RequestBodyTooLargeError(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")
        self.details = {"limit_bytes": limit}


class RequestContextMiddleware:
    """Tags each request with an ``X-Request-ID`` (the caller's, if well-formed), refuses
    bodies over ``max_body_bytes`` with a 413, measures the request by route template,
    writes one access-log line, and turns an unhandled exception into a 500 in the error
    shape so the caller still gets the request id."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

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

        received = 0

        async def receive_with_limit() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                raise RequestBodyTooLargeError(self.max_body_bytes)
            return message

        self.metrics.inflight.inc()
        try:
            if _declared_length(scope) > self.max_body_bytes:
                await _send_error(send_with_id, 413, _too_large(self.max_body_bytes))
            elif _has_nul(scope):
                await _send_error(send_with_id, 422, _NUL_IN_URL)
            else:
                await self.app(scope, receive_with_limit, send_with_id)
        except Exception as exc:
            if response_started:
                raise  # the answer is on its way; whoever raised knows what it sent
            if isinstance(exc, RequestBodyTooLargeError):
                await _send_error(send_with_id, 413, _too_large(self.max_body_bytes))
            else:
                logger.exception("unhandled error")
                await _send_error(send_with_id, 500, _internal_error(request_id))
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


_NUL_IN_URL = {
    "error": {
        "code": "request/invalid",
        "message": "the URL contains a NUL character, which no name or value may hold",
        "details": {},
    }
}


def _has_nul(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    return "\x00" in scope["path"] or b"%00" in query or b"\x00" in query


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _too_large(limit: int) -> dict[str, Any]:
    return {
        "error": {
            "code": "request/too_large",
            "message": f"the request body is larger than {limit} bytes",
            "details": {"limit_bytes": limit},
        }
    }


def _internal_error(request_id: str) -> dict[str, Any]:
    return {
        "error": {
            "code": "internal/error",
            "message": "the server failed to answer; the request id tells an operator where "
            "to look",
            "details": {"request_id": request_id},
        }
    }


async def _send_error(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
