"""Shared spec pieces: names, pages."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict, StringConstraints, model_validator

T = TypeVar("T")

ProjectName = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", max_length=63),
]
"""A DNS-1123 label, so a project can become a Kubernetes namespace unchanged."""

UserName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$", max_length=64)
]
SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,252}$"  # noqa: S105
SecretName = Annotated[str, StringConstraints(pattern=SECRET_NAME_PATTERN, max_length=253)]
RoleName = Annotated[str, StringConstraints(pattern=r"^(viewer|editor|admin)$")]


class Spec(BaseModel):
    """Base of every spec: unknown fields are an error, not silently dropped, and no
    string may hold a NUL character (PostgreSQL cannot store one)."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: Any) -> Any:
        if _holds_nul(data):
            raise ValueError("text must not contain NUL characters")
        return data


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_nul(v) for v in value)
    return False


class PatchSpec(Spec):
    """A partial update: omitted fields stay as they are; ``null`` is refused except for
    the fields named in ``nullable``, where it clears the value."""

    nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _refuse_nulls(self) -> Self:
        nulled = sorted(
            name for name in self.model_fields_set - self.nullable if getattr(self, name) is None
        )
        if nulled:
            raise ValueError(f"cannot be null (omit a field to leave it unchanged): {nulled}")
        return self


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None
