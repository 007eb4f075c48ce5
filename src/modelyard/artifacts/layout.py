"""Where things live under a store's root, and how a listing maps back to digests.

::

    <root>/objects/sha256/<2 hex>/<62 hex>        the content
    <root>/objects/sha256/<2 hex>/<62 hex>.json   its sidecar (an ArtifactRef + created_at)
    <root>/staging/                               spool files of local stores, before publishing
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SIDECAR_SUFFIX = ".json"


@dataclass(frozen=True)
class Layout:
    """Paths inside one store root (an fsspec path: no protocol, no trailing slash)."""

    root: str

    @property
    def objects(self) -> str:
        """The folder holding every object and sidecar."""
        return f"{self.root}/objects/sha256"

    @property
    def staging(self) -> str:
        """The spool folder of a local store (same filesystem as the objects)."""
        return f"{self.root}/staging"

    def object(self, digest: str) -> str:
        """The content path of ``digest`` (``sha256:<hex>``)."""
        hex_ = digest.removeprefix("sha256:")
        return f"{self.objects}/{hex_[:2]}/{hex_[2:]}"

    def sidecar(self, digest: str) -> str:
        """The sidecar path of ``digest``."""
        return self.object(digest) + SIDECAR_SUFFIX

    def parse(self, path: str) -> tuple[str, bool] | None:
        """``(digest, is_sidecar)`` for a path in the layout, ``None`` for anything else."""
        prefix = self.objects + "/"
        if not path.startswith(prefix):
            return None
        parts = path[len(prefix) :].split("/")
        if len(parts) != 2:
            return None
        head, rest = parts
        is_sidecar = rest.endswith(SIDECAR_SUFFIX)
        hex_ = head + rest.removesuffix(SIDECAR_SUFFIX)
        if len(head) != 2 or len(hex_) != 64 or not _is_lower_hex(hex_):
            return None
        return f"sha256:{hex_}", is_sidecar


def _is_lower_hex(text: str) -> bool:
    return all(char in "0123456789abcdef" for char in text)


@dataclass
class StoredObject:
    """What a listing found for one digest: its content and/or its sidecar."""

    digest: str
    object_info: dict[str, Any] | None = None
    sidecar_info: dict[str, Any] | None = None

    @property
    def visible(self) -> bool:
        """Both halves present: the only state in which the artifact exists."""
        return self.object_info is not None and self.sidecar_info is not None

    @property
    def size(self) -> int:
        """Bytes taken by the content and the sidecar together."""
        return sum(int(info.get("size") or 0) for info in self._infos())

    def modified(self) -> datetime | None:
        """The newest modification time of either half (a repeated put refreshes it)."""
        times = [t for t in (modified_at(info) for info in self._infos()) if t is not None]
        return max(times) if times else None

    def _infos(self) -> list[dict[str, Any]]:
        return [info for info in (self.object_info, self.sidecar_info) if info is not None]


def modified_at(info: dict[str, Any]) -> datetime | None:
    """The modification time in an fsspec ``info`` dict, across implementations.

    Local files report ``mtime`` (epoch seconds), S3 ``LastModified`` (a datetime); other
    filesystems use similar names. ``None`` when unknown: callers must then assume "new".
    """
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, tz=UTC)
    return None
