"""The audit log, newest first."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import AwareDatetime

from modelyard.api.deps import API_PREFIX, DEFAULT_PAGE, Ctx, Cursor, Limit, page_out
from modelyard.services.audit import AuditService
from modelyard.specs.common import PageOut
from modelyard.specs.projects import AuditEventOut

router = APIRouter(prefix=API_PREFIX, tags=["audit"])


@router.get("/audit")
def list_audit_events(
    ctx: Ctx,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE,
    project: str | None = None,
    actor: str | None = None,
    since: AwareDatetime | None = None,
) -> PageOut[AuditEventOut]:
    page = AuditService(ctx).list(
        cursor=cursor, limit=limit, project=project, actor=actor, since=since
    )
    return page_out(page, AuditEventOut.model_validate)
