"""Platform users: created by a superuser, or on first sign-in through OIDC."""

from __future__ import annotations

from modelyard.errors import ConflictError, NotFoundError
from modelyard.services.context import ServiceContext, check_version
from modelyard.specs.identity import UserCreate, UserUpdate
from modelyard.store.models import User
from modelyard.store.pagination import Page
from modelyard.store.repositories import UserRepository


class UserService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.users = UserRepository(ctx.session)

    def create(self, spec: UserCreate) -> User:
        self.ctx.require_superuser()
        user = User(
            name=spec.name,
            display_name=spec.display_name,
            email=spec.email,
            is_superuser=spec.is_superuser,
        )
        self.ctx.session.add(user)
        self.ctx.flush(f"user {spec.name!r}")
        self.ctx.audit("user.create", "user", user.name, details={"superuser": spec.is_superuser})
        return user

    def list(self, *, cursor: str | None, limit: int) -> Page[User]:
        self.ctx.require_superuser()
        return self.users.page(cursor=cursor, limit=limit)

    def get(self, name: str) -> User:
        if name != self.ctx.principal.name:
            self.ctx.require_superuser()
        return self._load(name)

    def update(self, name: str, spec: UserUpdate, *, expected_version: int | None) -> User:
        self.ctx.require_superuser()
        user = self._load(name)
        check_version(user.version, expected_version, f"user {name!r}")
        changes = spec.model_dump(exclude_unset=True)
        if user.id == self.ctx.principal.user_id and (
            changes.get("is_superuser") is False or changes.get("disabled") is True
        ):
            raise ConflictError(
                "you cannot remove your own superuser role or disable yourself",
                code="user/self_lockout",
            )
        for field, value in changes.items():
            setattr(user, field, value)
        self.ctx.flush(f"user {name!r}")
        self.ctx.audit("user.update", "user", name, details={"fields": sorted(changes)})
        return user

    def _load(self, name: str) -> User:
        user = self.users.by_name(name)
        if user is None:
            raise NotFoundError(
                f"user {name!r} does not exist", code="user/not_found", details={"user": name}
            )
        return user
