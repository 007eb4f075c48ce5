"""Projects (the tenant unit) and their members."""

from __future__ import annotations

from modelyard.auth.roles import Permission, Role
from modelyard.errors import ConflictError, NotFoundError
from modelyard.services.context import ServiceContext, check_version
from modelyard.specs.projects import MemberAdd, MemberUpdate, ProjectCreate, ProjectUpdate
from modelyard.store.models import Project, RoleBinding, utcnow
from modelyard.store.pagination import Page
from modelyard.store.repositories import ProjectRepository, RoleBindingRepository, UserRepository


class ProjectService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.projects = ProjectRepository(ctx.session)

    def create(self, spec: ProjectCreate) -> Project:
        """Create a project; its creator becomes its first admin."""
        if not self.ctx.settings.allow_user_project_creation:
            self.ctx.require_superuser()
        project = Project(
            name=spec.name,
            description=spec.description,
            labels=spec.labels,
            created_by=self.ctx.principal.name,
        )
        self.ctx.session.add(project)
        self.ctx.flush(f"project {spec.name!r}")
        self.ctx.session.add(
            RoleBinding(
                project_id=project.id, user_id=self.ctx.principal.user_id, role=Role.ADMIN.label
            )
        )
        self.ctx.flush(f"project {spec.name!r}")
        self.ctx.audit("project.create", "project", project.name, project=project)
        return project

    def list(self, *, cursor: str | None, limit: int) -> Page[Project]:
        """Every project for a superuser; otherwise those the caller has a role in."""
        principal = self.ctx.principal
        if principal.is_superuser:
            return self.projects.page(cursor=cursor, limit=limit)
        return self.projects.page(
            cursor=cursor,
            limit=limit,
            member_id=principal.user_id,
            also_names=principal.group_roles.keys(),
        )

    def get(self, name: str) -> Project:
        return self.ctx.project(name, Permission.READ)

    def update(self, name: str, spec: ProjectUpdate, *, expected_version: int | None) -> Project:
        project = self.ctx.project(name, Permission.MANAGE)
        check_version(project.version, expected_version, f"project {name!r}")
        changes = spec.model_dump(exclude_unset=True)
        for field, value in changes.items():
            setattr(project, field, value)
        self.ctx.flush(f"project {name!r}")
        self.ctx.audit(
            "project.update", "project", name, project=project, details={"fields": sorted(changes)}
        )
        return project

    def delete(self, name: str, *, expected_version: int | None) -> None:
        project = self.ctx.project(name, Permission.MANAGE)
        check_version(project.version, expected_version, f"project {name!r}")
        self.ctx.session.delete(project)
        self.ctx.flush(f"project {name!r}")
        self.ctx.audit("project.delete", "project", name, project=project)


class MemberService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.bindings = RoleBindingRepository(ctx.session)
        self.users = UserRepository(ctx.session)

    def list(self, project: str, *, cursor: str | None, limit: int) -> Page[RoleBinding]:
        record = self.ctx.project(project, Permission.READ)
        return self.bindings.page(record.id, cursor=cursor, limit=limit)

    def add(self, project: str, spec: MemberAdd) -> RoleBinding:
        record = self.ctx.project(project, Permission.MANAGE)
        user = self.users.by_name(spec.user)
        if user is None:
            raise NotFoundError(
                f"user {spec.user!r} does not exist",
                code="user/not_found",
                details={"user": spec.user},
            )
        if self.bindings.find(record.id, user.id) is not None:
            raise ConflictError(
                f"{spec.user!r} is already a member of {project!r}; update their role instead",
                code="member/already_exists",
            )
        binding = RoleBinding(project_id=record.id, user_id=user.id, role=spec.role)
        self.ctx.session.add(binding)
        self.ctx.flush(f"membership of {spec.user!r}")
        self.ctx.audit(
            "member.add", "member", spec.user, project=record, details={"role": spec.role}
        )
        return binding

    def update(
        self, project: str, user: str, spec: MemberUpdate, *, expected_version: int | None
    ) -> RoleBinding:
        record = self.ctx.project(project, Permission.MANAGE)
        binding = self._load(record, user)
        check_version(binding.version, expected_version, f"membership of {user!r}")
        if binding.role == Role.ADMIN.label and spec.role != Role.ADMIN.label:
            self._keep_an_admin(record)
        old = binding.role
        binding.role = spec.role
        self.ctx.flush(f"membership of {user!r}")
        self.ctx.audit(
            "member.update", "member", user, project=record, details={"from": old, "to": spec.role}
        )
        return binding

    def remove(self, project: str, user: str, *, expected_version: int | None) -> None:
        record = self.ctx.project(project, Permission.MANAGE)
        binding = self._load(record, user)
        check_version(binding.version, expected_version, f"membership of {user!r}")
        if binding.role == Role.ADMIN.label:
            self._keep_an_admin(record)
        self.ctx.session.delete(binding)
        self.ctx.flush(f"membership of {user!r}")
        self.ctx.audit("member.remove", "member", user, project=record)

    def _load(self, project: Project, user: str) -> RoleBinding:
        record = self.users.by_name(user)
        binding = self.bindings.find(project.id, record.id) if record else None
        if binding is None:
            raise NotFoundError(
                f"{user!r} is not a member of {project.name!r}",
                code="member/not_found",
                details={"project": project.name, "user": user},
            )
        return binding

    def _keep_an_admin(self, project: Project) -> None:
        # Touch the project row: of two concurrent requests that each demote or remove a
        # different admin, the second then fails its version check instead of both
        # passing the count below and leaving the project with no admin.
        project.updated_at = utcnow()
        self.ctx.flush(f"project {project.name!r}")
        if self.bindings.count_with_role(project.id, Role.ADMIN.label) <= 1:
            raise ConflictError(
                f"project {project.name!r} must keep at least one admin",
                code="member/last_admin",
            )
