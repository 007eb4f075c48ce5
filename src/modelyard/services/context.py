"""The one context object every service receives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from modelyard.auth.principal import Origin, Principal
from modelyard.auth.roles import Permission, Role
from modelyard.config import Settings
from modelyard.errors import ConflictError, NotFoundError, PermissionDeniedError
from modelyard.store.models import AuditEvent, Project
from modelyard.store.repositories import ProjectRepository, RoleBindingRepository


@dataclass(frozen=True)
class ServiceContext:
    """A unit of work on behalf of one principal.

    Args:
        session: The open transaction all reads and writes go through.
        principal: Who is acting.
        origin: Where the call came from (recorded in the audit log).
        settings: The platform's settings.
    """

    session: Session
    principal: Principal
    origin: Origin
    settings: Settings

    def audit(
        self,
        action: str,
        resource_type: str,
        resource_name: str | None,
        *,
        project: Project | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Record a mutation; it commits or rolls back with the mutation itself."""
        self.session.add(
            AuditEvent(
                actor=self.principal.name,
                action=action,
                outcome="success",
                project=project.name if project else None,
                project_id=project.id if project else None,
                resource_type=resource_type,
                resource_name=resource_name,
                client_ip=self.origin.client_ip,
                user_agent=self.origin.user_agent,
                request_id=self.origin.request_id,
                details=details or {},
            )
        )

    def flush(self, what: str) -> None:
        """Write pending changes now, turning lost races into 409s naming ``what``."""
        try:
            self.session.flush()
        except StaleDataError as exc:
            raise ConflictError(
                f"{what} was changed by someone else; read it again and retry",
                code="resource/version_conflict",
            ) from exc
        except IntegrityError as exc:
            if is_unique_violation(exc):
                raise ConflictError(
                    f"{what} already exists", code="resource/already_exists"
                ) from exc
            raise ConflictError(
                f"{what} refers to something that no longer exists",
                code="resource/integrity_violation",
            ) from exc

    def require_superuser(self) -> None:
        if not self.principal.is_superuser:
            raise PermissionDeniedError(
                "this needs a platform superuser", code="auth/superuser_required"
            )

    def role_in(self, project: Project) -> Role | None:
        """The caller's effective role in ``project``: stored binding or group grant."""
        if self.principal.is_superuser:
            return Role.ADMIN
        binding = RoleBindingRepository(self.session).find(project.id, self.principal.user_id)
        stored = Role.parse(binding.role) if binding else None
        granted = self.principal.group_roles.get(project.name)
        candidates = [r for r in (stored, granted) if r is not None]
        return max(candidates) if candidates else None

    def project(self, name: str, permission: Permission) -> Project:
        """Load a project the caller holds ``permission`` on.

        Raises:
            NotFoundError: no such project.
            PermissionDeniedError: the caller's role in it is too low, or it has none.
        """
        project = ProjectRepository(self.session).by_name(name)
        if project is None:
            raise NotFoundError(
                f"project {name!r} does not exist",
                code="project/not_found",
                details={"project": name},
            )
        role = self.role_in(project)
        if role is None or role < permission.least_role:
            have = role.label if role else "none"
            raise PermissionDeniedError(
                f"this needs the {permission.least_role.label} role in project {name!r} "
                f"(you have: {have})",
                code="auth/forbidden",
                details={"project": name, "required": permission.least_role.label, "role": have},
            )
        return project


def is_unique_violation(exc: IntegrityError) -> bool:
    """Whether the database refused a duplicate (rather than, say, a missing parent)."""
    sqlstate = getattr(exc.orig, "sqlstate", None)  # psycopg
    if sqlstate is not None:
        return bool(sqlstate == "23505")
    return "UNIQUE constraint failed" in str(exc.orig)  # sqlite3


def check_version(current: int, expected: int | None, what: str) -> None:
    """Enforce an ``If-Match`` precondition: the caller must have seen the latest version."""
    if expected is not None and expected != current:
        raise ConflictError(
            f"{what} is at version {current}, not {expected}; read it again and retry",
            code="resource/version_conflict",
            details={"expected": expected, "current": current},
        )
