"""Specs of users, API tokens and the caller's identity."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from modelyard.specs.common import PatchSpec, Spec, UserName


class UserCreate(Spec):
    name: UserName
    display_name: str = Field(default="", max_length=200)
    email: str | None = Field(default=None, max_length=320)
    is_superuser: bool = False


class UserUpdate(PatchSpec):
    nullable = frozenset({"email"})

    display_name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    is_superuser: bool | None = None
    disabled: bool | None = None


class UserOut(Spec):
    id: str
    name: str
    display_name: str
    email: str | None
    is_superuser: bool
    disabled: bool
    version: int
    created_at: datetime
    updated_at: datetime


class WhoAmI(Spec):
    name: str
    is_superuser: bool
    via: str
    projects: dict[str, str] = Field(description="project name -> effective role")


class TokenCreate(Spec):
    name: str = Field(min_length=1, max_length=100)
    expires_in_days: int | None = Field(
        default=None, ge=0, le=3650, description="Omit for the server's default; 0 for never."
    )


class TokenOut(Spec):
    id: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="The token itself. Shown once; store it now.")
