"""Garbage collection: delete what no record references any more, never what is being written.

An object is deleted when its digest is not kept and both halves (content and sidecar)
are older than ``min_age``. The age guards against a race with writers: a job that has
just put an artifact (or put existing content again, which refreshes the sidecar) but has
not yet recorded its ref in the metadata DB has its objects spared for ``min_age``.

Known limit: object stores offer no lock, so a put that refreshes old content in the
instant between gc's last check and its delete can still lose it; run gc with a
``min_age`` well above the time a job takes from ``put`` to recording the ref.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from modelyard.artifacts.layout import StoredObject, modified_at
from modelyard.artifacts.refs import RefLike, digest_of
from modelyard.artifacts.store import ArtifactStore
from modelyard.errors import InvalidInputError, NotFoundError

log = logging.getLogger(__name__)

DEFAULT_MIN_AGE = timedelta(hours=1)


@dataclass(frozen=True)
class GcReport:
    """What a garbage collection deleted (or, on a dry run, would delete).

    Attributes:
        dry_run: Whether nothing was actually deleted.
        deleted: Digests of the objects removed, incomplete ones (content without sidecar,
            or the reverse) included, sorted.
        kept: Objects kept because they are referenced (directly or by a kept manifest).
        too_young: Unreferenced objects spared because they are younger than ``min_age``.
        bytes_freed: Content, sidecar and temporary-file bytes removed.
        temp_files: Stale spool files removed from the store's ``staging`` folder.
    """

    dry_run: bool
    deleted: tuple[str, ...]
    kept: int
    too_young: int
    bytes_freed: int
    temp_files: int

    @property
    def deleted_count(self) -> int:
        """How many objects were (or would be) deleted."""
        return len(self.deleted)


def collect_garbage(
    store: ArtifactStore,
    keep: Iterable[RefLike],
    *,
    dry_run: bool,
    min_age: timedelta = DEFAULT_MIN_AGE,
) -> GcReport:
    """Delete every object of ``store`` not in ``keep`` and older than ``min_age``.

    Args:
        store: The store to clean.
        keep: Digests (or refs) still referenced. A kept ``directory`` artifact keeps
            every file its manifest lists.
        dry_run: Delete nothing; report what would be deleted.
        min_age: Spare anything modified more recently than this.

    Raises:
        InvalidInputError: ``min_age`` is negative or ``keep`` holds a malformed digest.
    """
    if min_age < timedelta(0):
        raise InvalidInputError("min_age cannot be negative", code="artifact/invalid_gc")
    now = datetime.now(UTC)
    stored = store.scan()
    kept_digests = _expand(store, {digest_of(ref) for ref in keep}, stored)
    deleted: list[str] = []
    kept = too_young = freed = 0
    for digest, entry in sorted(stored.items()):
        if digest in kept_digests:
            kept += 1
        elif not _old(entry.modified(), now, min_age):
            too_young += 1
        elif dry_run or _delete(store, entry, now, min_age):
            deleted.append(digest)
            freed += entry.size
        else:
            too_young += 1  # refreshed by a put since the listing
    temp_files, temp_bytes = _clean_tmp(store, now, min_age, dry_run=dry_run)
    report = GcReport(
        dry_run=dry_run,
        deleted=tuple(deleted),
        kept=kept,
        too_young=too_young,
        bytes_freed=freed + temp_bytes,
        temp_files=temp_files,
    )
    log.info(
        "artifact gc of %s: %s %d objects (%d bytes), kept %d, spared %d too young",
        store.url,
        "would delete" if dry_run else "deleted",
        report.deleted_count,
        report.bytes_freed,
        report.kept,
        report.too_young,
    )
    return report


def _expand(store: ArtifactStore, keep: set[str], stored: dict[str, StoredObject]) -> set[str]:
    """``keep`` plus the files of every kept, visible directory manifest."""
    expanded = set(keep)
    visible = sorted(digest for digest in keep if digest in stored and stored[digest].visible)
    for ref in store.refs(visible):
        if ref.kind != "directory":
            continue
        try:
            manifest = store.manifest(ref)
        except NotFoundError:
            continue  # deleted since the listing: nothing of it left to keep
        expanded.update(entry.digest for entry in manifest.files.values())
    return expanded


def _old(modified: datetime | None, now: datetime, min_age: timedelta) -> bool:
    if modified is None:
        return False  # unknown age: assume it is being written
    return max(now - modified, timedelta(0)) >= min_age


def _delete(store: ArtifactStore, entry: StoredObject, now: datetime, min_age: timedelta) -> bool:
    """Delete one object, sidecar first (it vanishes at once); False if it was refreshed."""
    halves = [
        (store.layout.sidecar(entry.digest), entry.sidecar_info),
        (store.layout.object(entry.digest), entry.object_info),
    ]
    present = [path for path, info in halves if info is not None]
    # Re-check just before deleting: a put may have refreshed (or re-uploaded) it since
    # the listing.
    for path in present:
        try:
            if not _old(modified_at(store.fs.info(path)), now, min_age):
                return False
        except FileNotFoundError:
            continue
    for path in present:
        with contextlib.suppress(FileNotFoundError):
            store.fs.rm_file(path)
    return True


def _clean_tmp(
    store: ArtifactStore, now: datetime, min_age: timedelta, *, dry_run: bool
) -> tuple[int, int]:
    """Remove spool files left by crashed puts of a local store: (count, bytes)."""
    count = size = 0
    for path, info in store.fs.find(store.layout.staging, detail=True).items():
        if not _old(modified_at(info), now, min_age):
            continue
        if not dry_run:
            try:
                store.fs.rm_file(path)
            except FileNotFoundError:
                continue
        count += 1
        size += int(info.get("size") or 0)
    return count, size
