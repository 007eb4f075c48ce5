"""Reading the audit log: everything for a superuser, a project's events for its admins."""

from __future__ import annotations

from datetime import datetime

from modelyard.auth.roles import Permission
from modelyard.services.context import ServiceContext
from modelyard.store.models import AuditEvent
from modelyard.store.pagination import Page
from modelyard.store.repositories import AuditRepository


class AuditService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.events = AuditRepository(ctx.session)

    def list(
        self,
        *,
        cursor: str | None,
        limit: int,
        project: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
    ) -> Page[AuditEvent]:
        if project is None:
            self.ctx.require_superuser()
        else:
            self.ctx.project(project, Permission.MANAGE)
        return self.events.page(
            cursor=cursor, limit=limit, project=project, actor=actor, since=since
        )
