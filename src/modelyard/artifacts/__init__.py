"""The artifact store: immutable, content-addressed tables, JSON, files and directories.

Artifacts are addressed by the SHA-256 of their bytes, live on any fsspec filesystem
(a local folder by default, S3 in production), are written atomically, and are cleaned
by :func:`collect_garbage` once no record references them::

    store = from_settings(Settings())
    ref = store.put_table(relation)          # an ArtifactRef, JSON-serialisable
    table = store.read_table(ref, columns=["id", "score"])
"""

from __future__ import annotations

from modelyard.artifacts.codecs import ROW_GROUP_ROWS, DirectoryManifest, ManifestEntry
from modelyard.artifacts.gc import GcReport, collect_garbage
from modelyard.artifacts.refs import ArtifactCorruptError, ArtifactRef, Kind, RefLike
from modelyard.artifacts.store import ArtifactStore, from_settings

__all__ = [
    "ROW_GROUP_ROWS",
    "ArtifactCorruptError",
    "ArtifactRef",
    "ArtifactStore",
    "DirectoryManifest",
    "GcReport",
    "Kind",
    "ManifestEntry",
    "RefLike",
    "collect_garbage",
    "from_settings",
]
