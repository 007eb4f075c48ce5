"""Specs of projects (tenants), their members, secrets and audit events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field

from modelyard.specs.common import PatchSpec, ProjectName, RoleName, Spec, UserName

MAX_SECRET_BYTES = 64 * 1024


class ProjectCreate(Spec):
    name: ProjectName
    description: str = Field(default="", max_length=2000)
    labels: dict[str, str] = Field(default_factory=dict)


class ProjectUpdate(PatchSpec):
    description: str | None = Field(default=None, max_length=2000)
    labels: dict[str, str] | None = None


class ProjectOut(Spec):
    id: str
    name: str
    description: str
    labels: dict[str, str]
    created_by: str | None
    version: int
    created_at: datetime
    updated_at: datetime


class MemberAdd(Spec):
    user: UserName
    role: RoleName


class MemberUpdate(Spec):
    role: RoleName


class MemberOut(Spec):
    user: str
    role: str
    version: int
    created_at: datetime
    updated_at: datetime


class SecretPut(Spec):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    value: str = Field(max_length=MAX_SECRET_BYTES, repr=False)
    description: str = Field(default="", max_length=500)


class SecretOut(Spec):
    """A secret's metadata. The value is never part of any answer."""

    name: str
    description: str
    version: int
    created_by: str | None
    created_at: datetime
    updated_at: datetime


class AuditEventOut(Spec):
    id: str
    at: datetime
    actor: str
    action: str
    outcome: str
    project: str | None
    resource_type: str
    resource_name: str | None
    client_ip: str | None
    user_agent: str | None
    request_id: str | None
    details: dict[str, Any]
