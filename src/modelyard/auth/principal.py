"""Who is calling: the authenticated principal and where the call came from."""

from __future__ import annotations

from dataclasses import dataclass, field

from modelyard.auth.roles import Role


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``group_roles`` are roles granted for this call by identity-provider groups (OIDC);
    they add to, and never reduce, the user's stored role bindings.
    """

    user_id: str
    name: str
    is_superuser: bool
    via: str  # "token", "oidc" or "local"
    group_roles: dict[str, Role] = field(default_factory=dict)


@dataclass(frozen=True)
class Origin:
    """Where a request came from, for the audit log."""

    client_ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


LOCAL_ORIGIN = Origin(client_ip="local", user_agent="modelyard-cli")
