"""FastAPI dependencies: the per-request service context and request metadata."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Query, Request

from modelyard.api.state import AppState
from modelyard.auth.principal import Origin
from modelyard.errors import InvalidInputError
from modelyard.monitoring.logging import request_id_var
from modelyard.services.context import ServiceContext
from modelyard.specs.common import PageOut
from modelyard.store.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page

T = TypeVar("T")

API_PREFIX = "/api/v1"
_VERSION = re.compile(r"[0-9]{1,18}")


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.modelyard
    return state


def origin_of(request: Request) -> Origin:
    # Behind a trusted proxy uvicorn's proxy_headers (MODELYARD_TRUST_FORWARDED_FOR) has
    # already resolved the client address; a header the client sent is never read here.
    client_ip = request.client.host if request.client else None
    return Origin(
        client_ip=client_ip[:64] if client_ip else None,
        user_agent=(request.headers.get("user-agent") or "")[:256] or None,
        request_id=request_id_var.get(),
    )


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credential.strip() or None


def service_context(request: Request) -> Iterator[ServiceContext]:
    """Authenticate the caller and open one transaction for the request.

    The transaction commits when the route returns (before the answer is sent), and
    rolls back if it raises.
    """
    state = app_state(request)
    origin = origin_of(request)
    with state.sessions() as session, session.begin():
        principal = state.authenticator.authenticate(session, _bearer(request), origin)
        request.state.principal = principal
        yield ServiceContext(
            session=session, principal=principal, origin=origin, settings=state.settings
        )


Ctx = Annotated[ServiceContext, Depends(service_context, scope="function")]


def _if_match(if_match: Annotated[str | None, Header()] = None) -> int | None:
    """``If-Match: "3"`` (or ``3``) -> 3; the version the caller last read."""
    if if_match is None:
        return None
    raw = if_match.strip().removeprefix("W/").strip('"')
    if not _VERSION.fullmatch(raw):
        raise InvalidInputError(
            'If-Match must be a resource version, like "3"',
            code="request/invalid_if_match",
            details={"header": "If-Match"},
        )
    return int(raw)


IfMatch = Annotated[int | None, Depends(_if_match)]
Cursor = Annotated[str | None, Query(description="From the previous page's next_cursor.")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
DEFAULT_PAGE = DEFAULT_LIMIT


def page_out(page: Page[Any], item: Callable[[Any], T]) -> PageOut[T]:
    """The API form of a page of stored records."""
    return PageOut[T](items=[item(record) for record in page.items], next_cursor=page.next_cursor)
