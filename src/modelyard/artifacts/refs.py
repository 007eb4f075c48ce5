"""Artifact references: what the metadata DB stores to point at content in the store."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from modelyard.errors import InvalidInputError, ModelyardError

Kind = Literal["table", "json", "file", "directory"]
"""What an artifact holds: Parquet table, canonical JSON, opaque bytes, or a directory."""

DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
_DIGEST_RE = re.compile(DIGEST_PATTERN)

Digest = Annotated[str, StringConstraints(pattern=DIGEST_PATTERN)]
"""``"sha256:"`` followed by 64 lowercase hex digits: the SHA-256 of the stored bytes."""

OCTET_STREAM = "application/octet-stream"
JSON_MEDIA_TYPE = "application/json"
PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
DIRECTORY_MEDIA_TYPE = "application/vnd.modelyard.directory+json"


class ArtifactCorruptError(ModelyardError):
    """A stored object's bytes no longer match its digest (or its record is unreadable)."""

    http_status = 500
    default_code = "artifact/corrupt"


class ArtifactRef(BaseModel):
    """An immutable, JSON-serialisable pointer to content in an :class:`ArtifactStore`.

    Equal content put the same way gives an equal ref, so refs can be compared, hashed
    and stored (``ref.model_dump(mode="json")``) in the metadata DB.

    Attributes:
        digest: ``"sha256:<64 hex>"``, the SHA-256 of the stored bytes.
        kind: ``"table"``, ``"json"``, ``"file"`` or ``"directory"``.
        size: Size of the stored bytes.
        media_type: The IANA media type of the stored bytes.
        metadata: Small descriptive facts, e.g. ``num_rows`` and ``schema`` for tables.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    digest: Digest
    kind: Kind
    size: int = Field(ge=0)
    media_type: str = Field(min_length=1)
    metadata: dict[str, str] = Field(default_factory=dict)

    def __hash__(self) -> int:
        # pydantic's generated hash would fail on the (unhashable) metadata dict.
        return hash(
            (
                self.digest,
                self.kind,
                self.size,
                self.media_type,
                tuple(sorted(self.metadata.items())),
            )
        )

    @property
    def hex(self) -> str:
        """The 64 hex digits of the digest, without the ``sha256:`` prefix."""
        return self.digest.removeprefix("sha256:")


class Sidecar(ArtifactRef):
    """The record stored next to an object; its presence is what makes the object visible."""

    # Unknown fields are ignored, so a newer writer can add some without breaking readers.
    model_config = ConfigDict(frozen=True, extra="ignore")

    created_at: datetime

    def ref(self) -> ArtifactRef:
        """The plain reference, without store bookkeeping."""
        return ArtifactRef.model_validate(self.model_dump(exclude={"created_at"}))


RefLike = ArtifactRef | str
"""An :class:`ArtifactRef` or its digest string."""


def digest_of(ref: RefLike) -> str:
    """The digest of ``ref``, validated.

    Raises:
        InvalidInputError: ``ref`` is a string that is not a ``sha256:<64 hex>`` digest.
    """
    if isinstance(ref, ArtifactRef):
        return ref.digest
    if isinstance(ref, str) and _DIGEST_RE.match(ref):
        return ref
    raise InvalidInputError(
        f"not an artifact digest: {ref!r:.80} (expected 'sha256:' and 64 lowercase hex digits)",
        code="artifact/invalid_digest",
    )
