"""Authentication: turn a bearer credential into a ``Principal``; bootstrap the first admin."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelyard.auth.oidc import OIDCIdentity, OIDCVerifier, grants_from_groups
from modelyard.auth.principal import Origin, Principal
from modelyard.auth.roles import Role
from modelyard.auth.tokens import hash_token, looks_like_api_token
from modelyard.config import Settings
from modelyard.errors import AuthenticationError, ConflictError
from modelyard.services.context import ServiceContext
from modelyard.services.tokens import IssuedToken, issue_token
from modelyard.specs.common import UserName
from modelyard.specs.identity import WhoAmI
from modelyard.store.db import transaction
from modelyard.store.models import AuditEvent, Project, RoleBinding, User
from modelyard.store.repositories import TokenRepository, UserRepository

_LAST_USED_RESOLUTION = timedelta(minutes=1)
_USER_NAME: TypeAdapter[str] = TypeAdapter(UserName)


@dataclass(frozen=True)
class Authenticator:
    """Checks ``Authorization: Bearer`` credentials: modelyard API tokens or OIDC JWTs."""

    settings: Settings
    oidc: OIDCVerifier | None
    sessions: sessionmaker[Session]

    def authenticate(self, session: Session, bearer: str | None, origin: Origin) -> Principal:
        if not bearer:
            raise AuthenticationError(
                "this needs a token: send 'Authorization: Bearer <token>'",
                code="auth/missing_token",
            )
        if looks_like_api_token(bearer):
            return self._from_api_token(session, bearer)
        if self.oidc is not None and bearer.count(".") == 2:
            return self._from_oidc(self.oidc, session, bearer, origin)
        raise AuthenticationError("the token is not valid", code="auth/invalid_token")

    def _from_api_token(self, session: Session, bearer: str) -> Principal:
        record = TokenRepository(session).by_hash(hash_token(bearer))
        if record is None:
            raise AuthenticationError("the token is not valid", code="auth/invalid_token")
        now = datetime.now(UTC)
        if record.revoked_at is not None:
            raise AuthenticationError("the token has been revoked", code="auth/token_revoked")
        if record.expires_at is not None and record.expires_at <= now:
            raise AuthenticationError("the token has expired", code="auth/token_expired")
        _refuse_disabled(record.user)
        if record.last_used_at is None or now - record.last_used_at > _LAST_USED_RESOLUTION:
            record.last_used_at = now
        return Principal(
            user_id=record.user.id,
            name=record.user.name,
            is_superuser=record.user.is_superuser,
            via="token",
        )

    def _from_oidc(
        self, oidc: OIDCVerifier, session: Session, bearer: str, origin: Origin
    ) -> Principal:
        identity = oidc.verify(bearer)
        grants = grants_from_groups(identity.groups, self.settings)
        users = UserRepository(session)
        user = users.by_oidc_subject(identity.qualified_subject)
        if user is None:
            # In a transaction of its own: the user and its audit event are kept together
            # whatever becomes of the request that brought them.
            with transaction(self.sessions) as own:
                _provision_oidc_user(own, identity, origin)
            user = users.by_oidc_subject(identity.qualified_subject)
            if user is None:
                raise AuthenticationError(
                    "the account could not be created", code="auth/provisioning_failed"
                )
        _refuse_disabled(user)
        return Principal(
            user_id=user.id,
            name=user.name,
            is_superuser=user.is_superuser or grants.superuser,
            via="oidc",
            group_roles=grants.project_roles,
        )


def _provision_oidc_user(session: Session, identity: OIDCIdentity, origin: Origin) -> None:
    """Create the user an identity provider vouches for, on its first request."""
    try:
        name = _USER_NAME.validate_python(identity.username)
    except ValidationError as exc:
        raise AuthenticationError(
            f"the identity provider's username {identity.username[:80]!r} is not a valid "
            "modelyard user name (letters, digits and ._@+-, at most 64)",
            code="auth/invalid_username",
        ) from exc
    users = UserRepository(session)
    if users.by_oidc_subject(identity.qualified_subject) is not None:
        return  # a concurrent first request created it
    if users.by_name(name) is not None:
        raise AuthenticationError(
            f"the name {name!r} belongs to another account; ask an administrator to link or "
            "rename it",
            code="auth/user_conflict",
        )
    user = User(name=name, email=identity.email, oidc_subject=identity.qualified_subject)
    session.add(user)
    session.add(
        AuditEvent(
            actor=user.name,
            action="user.create",
            resource_type="user",
            resource_name=user.name,
            client_ip=origin.client_ip,
            user_agent=origin.user_agent,
            request_id=origin.request_id,
            details={"via": "oidc", "issuer": identity.issuer},
        )
    )


def _refuse_disabled(user: User) -> None:
    if user.disabled:
        raise AuthenticationError(f"user {user.name!r} is disabled", code="auth/user_disabled")


def whoami(ctx: ServiceContext) -> WhoAmI:
    """The caller's name and effective role in every project they can see."""
    rows = ctx.session.execute(
        select(Project.name, RoleBinding.role)
        .join(RoleBinding, RoleBinding.project_id == Project.id)
        .where(RoleBinding.user_id == ctx.principal.user_id)
    ).all()
    roles: dict[str, Role] = {name: Role.parse(role) for name, role in rows}
    for project, role in ctx.principal.group_roles.items():
        roles[project] = max(roles.get(project, role), role)
    return WhoAmI(
        name=ctx.principal.name,
        is_superuser=ctx.principal.is_superuser,
        via=ctx.principal.via,
        projects={name: role.label for name, role in sorted(roles.items())},
    )


def bootstrap_superuser(session: Session, settings: Settings, name: str) -> IssuedToken:
    """Create the first superuser and a token for it.

    Raises:
        ConflictError: a superuser already exists (the platform is initialised).
    """
    users = UserRepository(session)
    if users.count_superusers() > 0:
        raise ConflictError(
            "the platform already has a superuser; sign in with an existing token",
            code="init/already_initialised",
        )
    user = User(name=name, display_name="Platform administrator", is_superuser=True)
    session.add(user)
    session.flush()
    issued = issue_token(session, user, "bootstrap", settings.token_ttl_days)
    session.add(
        AuditEvent(
            actor=name,
            action="user.create",
            resource_type="user",
            resource_name=name,
            client_ip="local",
            user_agent="modelyard init",
            details={"superuser": True},
        )
    )
    return issued
