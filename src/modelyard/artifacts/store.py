"""The artifact store: typed puts and reads (tables, JSON, files, directories) over objects.

Verification: ``get_bytes``, ``get_json`` and ``get_directory`` check the digest of what
they read (they read every byte anyway). ``open``, ``read_table``, ``scan_table`` and
``local_path`` do not, since they may read a fraction of a large object; ``read_table``
and ``scan_table`` verify only when pyarrow cannot parse the object, to tell corruption
from a wrong kind. Call :meth:`ArtifactStore.verify` for a full check.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.dataset as ds  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from pydantic import ValidationError

from modelyard.artifacts.codecs import (
    DirectoryManifest,
    ManifestEntry,
    canonical_json,
    table_metadata,
    table_stream,
    write_parquet,
)
from modelyard.artifacts.objects import ObjectStore, check_digest, string_metadata
from modelyard.artifacts.refs import (
    DIRECTORY_MEDIA_TYPE,
    JSON_MEDIA_TYPE,
    OCTET_STREAM,
    PARQUET_MEDIA_TYPE,
    ArtifactRef,
    Kind,
    RefLike,
    digest_of,
)
from modelyard.artifacts.spool import Spool
from modelyard.config import Settings
from modelyard.errors import InvalidInputError

CHUNK_BYTES = 1024 * 1024


class ArtifactStore(ObjectStore):
    """Immutable, deduplicated artifacts addressed by the SHA-256 of their bytes.

    Nothing is created or contacted until the first operation. Equal content is stored
    once; putting it again returns an equal ref and only refreshes its age for gc.

    Args:
        url: ``file:///path``, a plain path, or ``s3://bucket/prefix`` (any fsspec URL).
        storage_options: Passed to the fsspec filesystem, e.g. ``endpoint_url``, ``key``,
            ``secret`` for S3. Without them s3fs uses the usual ``AWS_*`` environment
            variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).

    Raises:
        ConfigurationError: ``artifact/invalid_url`` when no filesystem serves ``url``.
    """

    # ---- writing --------------------------------------------------------------------------

    def put_bytes(
        self,
        data: bytes | bytearray | memoryview,
        *,
        kind: Kind = "file",
        media_type: str = OCTET_STREAM,
        metadata: Mapping[str, str] | None = None,
    ) -> ArtifactRef:
        """Store ``data``; return its ref (the existing one's digest if already stored)."""
        facts = string_metadata(metadata)
        with self._spool() as spool:
            spool.write(data)
            return self._publish(spool, kind, media_type, facts)

    def put_file(
        self,
        path: str | os.PathLike[str],
        *,
        media_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ArtifactRef:
        """Store the content of the local file ``path`` (streamed), kind ``file``.

        ``media_type`` defaults to a guess from the file name.

        Raises:
            InvalidInputError: ``artifact/invalid_source`` if ``path`` is not a file.
        """
        facts = string_metadata(metadata)
        source = Path(path)
        if not source.is_file():
            raise InvalidInputError(f"not a file: {source}", code="artifact/invalid_source")
        media_type = media_type or mimetypes.guess_type(source.name)[0] or OCTET_STREAM
        with self._spool() as spool:
            with source.open("rb") as handle:
                shutil.copyfileobj(handle, spool, CHUNK_BYTES)
            return self._publish(spool, "file", media_type, facts)

    def put_json(self, value: object, *, metadata: Mapping[str, str] | None = None) -> ArtifactRef:
        """Store ``value`` as canonical JSON (sorted keys, no whitespace, UTF-8), kind ``json``.

        Raises:
            InvalidInputError: ``value`` holds something JSON cannot represent.
        """
        data = canonical_json(value)
        return self.put_bytes(data, kind="json", media_type=JSON_MEDIA_TYPE, metadata=metadata)

    def put_table(self, data: object, *, metadata: Mapping[str, str] | None = None) -> ArtifactRef:
        """Store a table as deterministic Parquet, streaming batch by batch, kind ``table``.

        ``data`` may be a pyarrow ``Table``, ``RecordBatch`` or ``RecordBatchReader``, an
        iterable of ``RecordBatch``, a pandas ``DataFrame`` or a DuckDB relation. A reader
        or iterable is never materialised: memory stays bounded by one row group. The
        same data and schema give the same digest with the same pyarrow version.
        ``metadata`` is merged under the computed ``num_rows``, ``num_columns``, ``schema``.

        Raises:
            InvalidInputError: ``artifact/unsupported_type`` for other types,
                ``artifact/invalid_table`` for batches with differing schemas.
        """
        facts = string_metadata(metadata)
        schema, batches = table_stream(data)
        with self._spool() as spool:
            num_rows = write_parquet(schema, batches, spool)
            facts.update(table_metadata(schema, num_rows))
            return self._publish(spool, "table", PARQUET_MEDIA_TYPE, facts)

    def put_directory(self, path: str | os.PathLike[str]) -> ArtifactRef:
        """Store every regular file under ``path`` as an object, then a manifest of them.

        The ref is the manifest's (kind ``directory``). Symlinked files are stored by
        content, symlinked folders are not followed, empty folders are not recorded.

        Raises:
            InvalidInputError: ``artifact/invalid_source`` if ``path`` is not a folder.
        """
        root = Path(path)
        if not root.is_dir():
            raise InvalidInputError(f"not a folder: {root}", code="artifact/invalid_source")
        files: dict[str, ManifestEntry] = {}
        for folder, _, names in os.walk(root, onerror=_raise):
            for name in names:
                file = Path(folder, name)
                if file.is_file():  # skips sockets, FIFOs and dangling links
                    ref = self.put_file(file)
                    rel = file.relative_to(root).as_posix()
                    files[rel] = ManifestEntry(digest=ref.digest, size=ref.size)
        manifest = DirectoryManifest(files=files)
        facts = {
            "num_files": str(len(files)),
            "total_size": str(sum(entry.size for entry in files.values())),
        }
        return self.put_bytes(
            manifest.encode(), kind="directory", media_type=DIRECTORY_MEDIA_TYPE, metadata=facts
        )

    # ---- reading --------------------------------------------------------------------------

    def get_bytes(self, ref: RefLike) -> bytes:
        """The artifact's bytes, verified against its digest.

        Raises:
            NotFoundError: ``artifact/not_found``.
            ArtifactCorruptError: ``artifact/corrupt`` if the bytes do not match.
        """
        digest = digest_of(ref)
        record = self._sidecar(digest)
        try:
            data = bytes(self.fs.cat_file(self.layout.object(digest)))
        except FileNotFoundError:
            raise self._not_found(digest) from None
        check_digest(digest, record.size, f"sha256:{hashlib.sha256(data).hexdigest()}", len(data))
        return data

    def get_json(self, ref: RefLike) -> Any:
        """The artifact parsed as JSON (verified, like :meth:`get_bytes`)."""
        data = self.get_bytes(ref)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise InvalidInputError(
                f"artifact {digest_of(ref)} is not JSON", code="artifact/not_readable"
            ) from exc

    def read_table(self, ref: RefLike, columns: Sequence[str] | None = None) -> Any:
        """The table artifact as a ``pyarrow.Table`` (all columns, or only ``columns``)."""
        path = self._readable(ref)
        return self._arrow(ref, lambda: pq.read_table(path, columns=columns, filesystem=self.fs))

    def scan_table(self, ref: RefLike) -> Any:
        """The table artifact as a lazy ``pyarrow.dataset.Dataset``, for streaming scans."""
        path = self._readable(ref)
        return self._arrow(ref, lambda: ds.dataset(path, format="parquet", filesystem=self.fs))

    def local_path(self, ref: RefLike) -> Path | None:
        """The object's file for local stores (read it in place, e.g. with DuckDB), else None.

        The file must be treated as read-only: it is shared by every ref to that content.
        """
        path = self._readable(ref)
        return Path(path) if self.is_local else None

    def manifest(self, ref: RefLike) -> DirectoryManifest:
        """The manifest of a ``directory`` artifact (verified)."""
        try:
            return DirectoryManifest.model_validate_json(self.get_bytes(ref))
        except ValidationError as exc:
            raise InvalidInputError(
                f"artifact {digest_of(ref)} is not a directory manifest",
                code="artifact/not_readable",
            ) from exc

    def get_directory(self, ref: RefLike, dest: str | os.PathLike[str]) -> Path:
        """Materialise a ``directory`` artifact into ``dest`` (absent or empty); return it.

        Every file is verified against its digest before it is moved into place.

        Raises:
            InvalidInputError: ``artifact/destination_not_empty``.
            NotFoundError: the manifest or one of its files is missing.
            ArtifactCorruptError: a file's bytes do not match its digest.
        """
        manifest = self.manifest(ref)
        target_root = Path(dest)
        if target_root.exists() and (not target_root.is_dir() or any(target_root.iterdir())):
            raise InvalidInputError(
                f"{target_root} exists and is not an empty folder",
                code="artifact/destination_not_empty",
            )
        for name, entry in sorted(manifest.files.items()):
            target = target_root.joinpath(*name.split("/"))
            with Spool(str(target.parent)) as spool:
                with self.open(entry.digest) as source:
                    shutil.copyfileobj(source, spool, CHUNK_BYTES)
                check_digest(entry.digest, entry.size, spool.seal(), spool.size)
                os.replace(spool.path, target)
        target_root.mkdir(parents=True, exist_ok=True)  # an empty directory artifact
        return target_root

    # ---- internals ------------------------------------------------------------------------

    def _arrow(self, ref: RefLike, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except FileNotFoundError:
            raise self._not_found(digest_of(ref)) from None
        except (pa.ArrowException, OSError) as exc:
            self.verify(ref)  # corruption is the better explanation, if it is the one
            raise InvalidInputError(
                f"cannot read artifact {digest_of(ref)} as a table: {exc}",
                code="artifact/not_readable",
            ) from exc


def _raise(error: OSError) -> None:
    # os.walk skips unreadable folders silently; a partial directory artifact must not be.
    raise error


def from_settings(settings: Settings) -> ArtifactStore:
    """The store at ``settings.resolved_artifacts_url`` (S3 credentials from ``AWS_*``)."""
    return ArtifactStore(settings.resolved_artifacts_url)
