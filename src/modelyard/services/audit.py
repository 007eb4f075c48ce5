"""Reading the audit log: everything for a superuser, a project's events for its admins."""

from __future__ import annotations

from datetime import datetime

from modelyard.auth.roles import Permission
from modelyard.services.context import ServiceContext
from modelyard.store.models import AuditEvent
from modelyard.store.pagination import Page
from modelyard.store.repositories import AuditRepository, ProjectRepository


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
        project_id = project_name = None
        if project is None:
            self.ctx.require_superuser()
        elif self.ctx.principal.is_superuser and not ProjectRepository(self.ctx.session).by_name(
            project
        ):
            project_name = project  # the history of a deleted project, for superusers
        else:
            project_id = self.ctx.project(project, Permission.MANAGE).id
        return self.events.page(
            cursor=cursor,
            limit=limit,
            project_id=project_id,
            project_name=project_name,
            actor=actor,
            since=since,
        )
