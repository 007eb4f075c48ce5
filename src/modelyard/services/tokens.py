"""API tokens of the calling user: create (shown once), list, revoke."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from modelyard.auth.tokens import display_prefix, generate_token, hash_token
from modelyard.errors import NotFoundError
from modelyard.services.context import ServiceContext
from modelyard.specs.identity import TokenCreate
from modelyard.store.models import ApiToken, User
from modelyard.store.pagination import Page
from modelyard.store.repositories import TokenRepository


@dataclass(frozen=True)
class IssuedToken:
    record: ApiToken
    token: str


def issue_token(session: Session, user: User, name: str, ttl_days: int) -> IssuedToken:
    """Create a token for ``user``; ``ttl_days == 0`` means it never expires."""
    token = generate_token()
    expires_at = datetime.now(UTC) + timedelta(days=ttl_days) if ttl_days > 0 else None
    record = ApiToken(
        user_id=user.id,
        name=name,
        token_hash=hash_token(token),
        prefix=display_prefix(token),
        expires_at=expires_at,
    )
    session.add(record)
    session.flush()
    return IssuedToken(record=record, token=token)


class TokenService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.tokens = TokenRepository(ctx.session)

    def create(self, spec: TokenCreate) -> IssuedToken:
        user = self.ctx.session.get(User, self.ctx.principal.user_id)
        if user is None:
            raise NotFoundError("your user no longer exists", code="user/not_found")
        ttl = (
            self.ctx.settings.token_ttl_days
            if spec.expires_in_days is None
            else spec.expires_in_days
        )
        issued = issue_token(self.ctx.session, user, spec.name, ttl)
        self.ctx.audit(
            "token.create",
            "token",
            issued.record.id,
            details={"name": spec.name, "expires_at": str(issued.record.expires_at)},
        )
        return issued

    def list(self, *, cursor: str | None, limit: int) -> Page[ApiToken]:
        return self.tokens.page(self.ctx.principal.user_id, cursor=cursor, limit=limit)

    def revoke(self, token_id: str) -> ApiToken:
        """Revoke one of the caller's tokens (a superuser may revoke anyone's)."""
        record = self.tokens.by_id(token_id)
        owned = record is not None and (
            record.user_id == self.ctx.principal.user_id or self.ctx.principal.is_superuser
        )
        if record is None or not owned:
            raise NotFoundError(
                f"token {token_id!r} does not exist",
                code="token/not_found",
                details={"token": token_id},
            )
        if record.revoked_at is None:
            record.revoked_at = datetime.now(UTC)
            self.ctx.flush(f"token {token_id!r}")
            self.ctx.audit("token.revoke", "token", token_id, details={"owner": record.user.name})
        return record
