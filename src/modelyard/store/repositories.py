"""Repositories: the only code that writes SQL for the control plane's resources."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from modelyard.store.models import (
    ApiToken,
    AuditEvent,
    PipelineRun,
    Project,
    RoleBinding,
    Secret,
    SecretKeyLock,
    TaskRun,
    User,
)
from modelyard.store.pagination import Page, paginate


class UserRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def by_name(self, name: str) -> User | None:
        return self.session.scalar(select(User).where(User.name == name))

    def by_id(self, user_id: str) -> User | None:
        return self.session.get(User, user_id)

    def by_oidc_subject(self, subject: str) -> User | None:
        return self.session.scalar(select(User).where(User.oidc_subject == subject))

    def count_superusers(self) -> int:
        statement = select(func.count()).select_from(User).where(User.is_superuser)
        return self.session.scalar(statement) or 0

    def page(self, *, cursor: str | None, limit: int) -> Page[User]:
        return paginate(self.session, select(User), User.id, cursor=cursor, limit=limit)


class ProjectRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def by_name(self, name: str) -> Project | None:
        return self.session.scalar(select(Project).where(Project.name == name))

    def page(
        self,
        *,
        cursor: str | None,
        limit: int,
        member_id: str | None = None,
        also_names: Iterable[str] = (),
    ) -> Page[Project]:
        """All projects, or (with ``member_id``) those the user is bound to or named in."""
        statement = select(Project)
        if member_id is not None:
            bound = select(RoleBinding.project_id).where(RoleBinding.user_id == member_id)
            statement = statement.where(
                or_(Project.id.in_(bound), Project.name.in_(list(also_names)))
            )
        return paginate(self.session, statement, Project.id, cursor=cursor, limit=limit)


class RoleBindingRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def find(self, project_id: str, user_id: str) -> RoleBinding | None:
        return self.session.scalar(
            select(RoleBinding).where(
                RoleBinding.project_id == project_id, RoleBinding.user_id == user_id
            )
        )

    def page(self, project_id: str, *, cursor: str | None, limit: int) -> Page[RoleBinding]:
        statement = select(RoleBinding).where(RoleBinding.project_id == project_id)
        return paginate(self.session, statement, RoleBinding.id, cursor=cursor, limit=limit)

    def count_with_role(self, project_id: str, role: str) -> int:
        statement = (
            select(func.count())
            .select_from(RoleBinding)
            .where(RoleBinding.project_id == project_id, RoleBinding.role == role)
        )
        return self.session.scalar(statement) or 0


class TokenRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def by_hash(self, token_hash: str) -> ApiToken | None:
        return self.session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash))

    def by_id(self, token_id: str) -> ApiToken | None:
        return self.session.get(ApiToken, token_id)

    def page(self, user_id: str, *, cursor: str | None, limit: int) -> Page[ApiToken]:
        statement = select(ApiToken).where(ApiToken.user_id == user_id)
        return paginate(self.session, statement, ApiToken.id, cursor=cursor, limit=limit)


class SecretRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def find(self, project_id: str, name: str) -> Secret | None:
        return self.session.scalar(
            select(Secret).where(Secret.project_id == project_id, Secret.name == name)
        )

    def page(self, project_id: str, *, cursor: str | None, limit: int) -> Page[Secret]:
        statement = select(Secret).where(Secret.project_id == project_id)
        return paginate(self.session, statement, Secret.id, cursor=cursor, limit=limit)

    def all_for_update(self) -> list[Secret]:
        return list(self.session.scalars(select(Secret).with_for_update()))


class SecretKeyLockRepository:
    """The row that serialises secret writes with key rotation (see ``SecretKeyLock``)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def acquire(self) -> int:
        """Take the lock for the rest of the transaction; returns the key generation."""
        bumped = self.session.execute(
            update(SecretKeyLock)
            .where(SecretKeyLock.id == 1)
            .values(generation=SecretKeyLock.generation + 1)
            .returning(SecretKeyLock.generation)
        ).scalar()
        if bumped is None:  # a store created without the migration's row
            self.session.add(SecretKeyLock(id=1, generation=1))
            self.session.flush()
            return 1
        return int(bumped)


class AuditRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, event: AuditEvent) -> None:
        self.session.add(event)

    def page(
        self,
        *,
        cursor: str | None,
        limit: int,
        project_id: str | None = None,
        project_name: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
    ) -> Page[AuditEvent]:
        """Newest first."""
        statement = select(AuditEvent)
        if project_id is not None:
            statement = statement.where(AuditEvent.project_id == project_id)
        if project_name is not None:
            statement = statement.where(AuditEvent.project == project_name)
        if actor is not None:
            statement = statement.where(AuditEvent.actor == actor)
        if since is not None:
            statement = statement.where(AuditEvent.at >= since)
        return paginate(
            self.session, statement, AuditEvent.id, cursor=cursor, limit=limit, descending=True
        )


class RunRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def find(self, project_id: str, run_id: str) -> PipelineRun | None:
        return self.session.scalar(
            select(PipelineRun).where(
                PipelineRun.project_id == project_id, PipelineRun.id == run_id
            )
        )

    def page(
        self, project_id: str, *, cursor: str | None, limit: int, pipeline: str | None = None
    ) -> Page[PipelineRun]:
        """Newest first."""
        statement = select(PipelineRun).where(PipelineRun.project_id == project_id)
        if pipeline is not None:
            statement = statement.where(PipelineRun.pipeline == pipeline)
        return paginate(
            self.session, statement, PipelineRun.id, cursor=cursor, limit=limit, descending=True
        )

    def tasks(self, run_id: str) -> list[TaskRun]:
        statement = select(TaskRun).where(TaskRun.run_id == run_id)
        return list(self.session.scalars(statement.order_by(TaskRun.id)))
