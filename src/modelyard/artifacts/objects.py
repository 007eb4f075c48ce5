"""Content-addressed objects with sidecars on an fsspec filesystem: the store's plumbing.

Writes are atomic: every put is spooled to a local temporary file while it is hashed,
then published in one step (``os.replace`` on a local filesystem, one ``put_file`` on
object storage, where a key appears only once its upload completes). The sidecar is
written last and an object without one counts as absent, so a crash at any point leaves
nothing visible; :func:`~modelyard.artifacts.gc.collect_garbage` removes the leftovers.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, BinaryIO, cast

import fsspec.core  # type: ignore[import-untyped]
from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]
from pydantic import ValidationError

from modelyard.artifacts.layout import Layout, StoredObject
from modelyard.artifacts.refs import (
    ArtifactCorruptError,
    ArtifactRef,
    Kind,
    RefLike,
    Sidecar,
    digest_of,
)
from modelyard.artifacts.spool import Spool
from modelyard.errors import ConfigurationError, InvalidInputError, NotFoundError

_LIST_BATCH = 256  # sidecars fetched per request batch when listing


class ObjectStore:
    """Immutable objects addressed by the SHA-256 of their bytes, each with a sidecar.

    Nothing is created or contacted until the first operation.

    Args:
        url: ``file:///path``, a plain path, or ``s3://bucket/prefix`` (any fsspec URL).
        storage_options: Passed to the fsspec filesystem, e.g. ``endpoint_url``, ``key``,
            ``secret`` for S3. Without them s3fs uses the usual ``AWS_*`` environment
            variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).

    Raises:
        ConfigurationError: ``artifact/invalid_url`` when no filesystem serves ``url``.
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        # Listings must be fresh: other processes write and collect garbage concurrently.
        options: dict[str, Any] = {"use_listings_cache": False, **(storage_options or {})}
        try:
            fs, root = fsspec.core.url_to_fs(url, **options)
        except (ValueError, ImportError) as exc:
            raise ConfigurationError(
                f"cannot open the artifact store {url!r}: {exc}", code="artifact/invalid_url"
            ) from exc
        self.url = url
        self.fs: Any = fs
        self.layout = Layout(str(root).rstrip("/"))
        self.is_local = isinstance(fs, LocalFileSystem)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def exists(self, ref: RefLike) -> bool:
        """Whether the artifact is stored (both its content and its sidecar)."""
        digest = digest_of(ref)
        return bool(
            self.fs.exists(self.layout.sidecar(digest))
            and self.fs.exists(self.layout.object(digest))
        )

    def info(self, ref: RefLike) -> ArtifactRef:
        """The stored ref of a digest (as first put).

        Raises:
            NotFoundError: ``artifact/not_found``.
        """
        digest = digest_of(ref)
        record = self._sidecar(digest)
        if not self.fs.exists(self.layout.object(digest)):
            raise self._not_found(digest)
        return record.ref()

    def open(self, ref: RefLike) -> BinaryIO:
        """A binary file object reading the artifact's bytes (unverified); close it."""
        digest = digest_of(ref)
        self._sidecar(digest)
        return cast(BinaryIO, self._open_object(digest))

    def verify(self, ref: RefLike) -> ArtifactRef:
        """Re-hash the stored bytes; return the stored ref if they match.

        Raises:
            NotFoundError: ``artifact/not_found``.
            ArtifactCorruptError: ``artifact/corrupt``.
        """
        digest = digest_of(ref)
        record = self._sidecar(digest)
        with self._open_object(digest) as handle:
            actual = hashlib.file_digest(handle, "sha256")
            size = handle.tell()
        check_digest(digest, record.size, f"sha256:{actual.hexdigest()}", size)
        return record.ref()

    def scan(self) -> dict[str, StoredObject]:
        """Everything under the objects folder by digest, visible or not (for gc)."""
        found: dict[str, StoredObject] = {}
        for path, info in self.fs.find(self.layout.objects, detail=True).items():
            parsed = self.layout.parse(path)
            if parsed is None:
                continue
            digest, is_sidecar = parsed
            entry = found.setdefault(digest, StoredObject(digest))
            if is_sidecar:
                entry.sidecar_info = info
            else:
                entry.object_info = info
        return found

    def refs(self, digests: Iterable[str]) -> Iterator[ArtifactRef]:
        """The stored refs of ``digests``, in order, fetching sidecars in batches.

        Digests without a sidecar are skipped; their content is not checked (see
        :meth:`info` for that).
        """
        pending = [digest_of(digest) for digest in digests]
        for start in range(0, len(pending), _LIST_BATCH):
            chunk = pending[start : start + _LIST_BATCH]
            paths = [self.layout.sidecar(digest) for digest in chunk]
            raw = self.fs.cat(paths, on_error="omit")
            for digest, path in zip(chunk, paths, strict=True):
                if path in raw:
                    yield parse_sidecar(digest, raw[path]).ref()

    def list(self) -> Iterator[ArtifactRef]:
        """Every visible artifact, in digest order."""
        return self.refs(sorted(d for d, entry in self.scan().items() if entry.visible))

    # ---- for subclasses ---------------------------------------------------------------------

    def _spool(self) -> Spool:
        # Local stores spool inside the root so publishing is a same-filesystem rename.
        return Spool(self.layout.staging if self.is_local else None)

    def _publish(
        self, spool: Spool, kind: Kind, media_type: str, facts: dict[str, str]
    ) -> ArtifactRef:
        """Seal ``spool`` and make its content visible (at most once per digest)."""
        digest = spool.seal()
        ref = ArtifactRef(
            digest=digest, kind=kind, size=spool.size, media_type=media_type, metadata=facts
        )
        obj = self.layout.object(digest)
        if self._refresh(digest):
            return ref
        if self.is_local:
            os.makedirs(posixpath.dirname(obj), exist_ok=True)
            os.replace(spool.path, obj)
        else:
            # One put_file: an S3 key appears only once its (multipart) upload completes.
            self.fs.put_file(spool.path, obj)
        self._write_sidecar(Sidecar(**ref.model_dump(), created_at=datetime.now(UTC)))
        return ref

    def _refresh(self, digest: str) -> bool:
        """If ``digest`` is fully stored, bump its sidecar's mtime and say so.

        The fresh mtime protects content that a running job has just put again (but not
        yet recorded) from a concurrent garbage collection honouring ``min_age``.
        """
        sidecar = self.layout.sidecar(digest)
        if not self.fs.exists(self.layout.object(digest)):
            return False
        try:
            if self.is_local:
                os.utime(sidecar)
            else:  # object stores cannot touch: rewrite the same small record
                self.fs.pipe_file(sidecar, self.fs.cat_file(sidecar))
        except FileNotFoundError:
            return False
        return True

    def _write_sidecar(self, record: Sidecar) -> None:
        data = record.model_dump_json().encode("utf-8")
        path = self.layout.sidecar(record.digest)
        if not self.is_local:
            self.fs.pipe_file(path, data)
            return
        with self._spool() as spool:
            spool.write(data)
            spool.seal()
            os.replace(spool.path, path)

    def _sidecar(self, digest: str) -> Sidecar:
        try:
            raw = self.fs.cat_file(self.layout.sidecar(digest))
        except FileNotFoundError:
            raise self._not_found(digest) from None
        return parse_sidecar(digest, raw)

    def _open_object(self, digest: str) -> Any:
        """The object's file, without checking its sidecar."""
        try:
            return self.fs.open(self.layout.object(digest), "rb")
        except FileNotFoundError:
            raise self._not_found(digest) from None

    def _readable(self, ref: RefLike) -> str:
        """The object path of a visible artifact (its sidecar and content both exist)."""
        digest = digest_of(ref)
        self._sidecar(digest)
        path = self.layout.object(digest)
        if not self.fs.exists(path):
            raise self._not_found(digest)
        return path

    def _not_found(self, digest: str) -> NotFoundError:
        return NotFoundError(
            f"artifact {digest} is not in the store {self.url}",
            code="artifact/not_found",
            details={"digest": digest},
        )


def string_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """A copy of ``metadata``, checked early so no work is wasted on a bad put.

    Raises:
        InvalidInputError: ``artifact/invalid_metadata`` if a key or value is not a string.
    """
    facts = dict(metadata or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in facts.items()):
        raise InvalidInputError(
            "artifact metadata keys and values must be strings",
            code="artifact/invalid_metadata",
        )
    return facts


def parse_sidecar(digest: str, raw: bytes) -> Sidecar:
    """The sidecar of ``digest`` from its raw bytes.

    Raises:
        ArtifactCorruptError: unreadable, or naming another digest.
    """
    try:
        record = Sidecar.model_validate_json(raw)
    except ValidationError as exc:
        raise ArtifactCorruptError(
            f"the record of artifact {digest} is unreadable", details={"digest": digest}
        ) from exc
    if record.digest != digest:
        raise ArtifactCorruptError(
            f"the record of artifact {digest} names {record.digest}", details={"digest": digest}
        )
    return record


def check_digest(digest: str, size: int, actual_digest: str, actual_size: int) -> None:
    """Raise :class:`ArtifactCorruptError` unless the bytes read match the record."""
    if actual_digest != digest or actual_size != size:
        raise ArtifactCorruptError(
            f"artifact {digest} is corrupt: its stored bytes ({actual_size} bytes) hash to "
            f"{actual_digest}",
            details={
                "digest": digest,
                "size": size,
                "actual_digest": actual_digest,
                "actual_size": actual_size,
            },
        )
