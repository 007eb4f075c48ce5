"""Garbage collection: keep what is referenced, spare what is young, report honestly."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from modelyard.artifacts import ArtifactRef, ArtifactStore, collect_garbage
from modelyard.errors import InvalidInputError

NOW = timedelta(0)


def _age(store: ArtifactStore, ref: ArtifactRef | str, hours: float) -> None:
    """Backdate both halves of a local object (object stores cannot be backdated)."""
    digest = ref.digest if isinstance(ref, ArtifactRef) else ref
    when = time.time() - hours * 3600
    for path in (store.layout.object(digest), store.layout.sidecar(digest)):
        if os.path.exists(path):
            os.utime(path, (when, when))


def test_gc_deletes_what_is_not_kept_and_dry_run_deletes_nothing(store: ArtifactStore) -> None:
    kept = store.put_json({"model": "v1"})
    garbage = [store.put_bytes(b"old run"), store.put_bytes(b"older run")]

    preview = collect_garbage(store, [kept.digest], dry_run=True, min_age=NOW)

    expected = tuple(sorted(ref.digest for ref in garbage))
    assert preview.dry_run
    assert preview.deleted == expected
    assert preview.kept == 1
    assert all(store.exists(ref) for ref in [kept, *garbage])

    report = collect_garbage(store, [kept.digest], dry_run=False, min_age=NOW)

    assert report.deleted == expected
    assert report.deleted_count == 2
    assert report.bytes_freed >= len(b"old run") + len(b"older run")
    assert report.bytes_freed == preview.bytes_freed
    assert [ref.digest for ref in store.list()] == [kept.digest]
    assert store.get_json(kept) == {"model": "v1"}
    assert collect_garbage(store, [kept], dry_run=False, min_age=NOW).deleted == ()


def test_gc_spares_objects_younger_than_min_age(store: ArtifactStore) -> None:
    fresh = store.put_bytes(b"being recorded right now")

    report = collect_garbage(store, [], dry_run=False)  # default min_age: one hour

    assert report.deleted == ()
    assert report.too_young == 1
    assert store.exists(fresh)


def test_gc_deletes_old_objects_once_min_age_has_passed(local_store: ArtifactStore) -> None:
    old, young = local_store.put_bytes(b"old"), local_store.put_bytes(b"young")
    _age(local_store, old, hours=2)

    report = collect_garbage(local_store, [], dry_run=False, min_age=timedelta(hours=1))

    assert report.deleted == (old.digest,)
    assert report.too_young == 1
    assert not local_store.exists(old)
    assert local_store.exists(young)


def test_putting_existing_content_again_refreshes_its_age(local_store: ArtifactStore) -> None:
    ref = local_store.put_bytes(b"reused by a new run")
    _age(local_store, ref, hours=5)

    assert local_store.put_bytes(b"reused by a new run") == ref
    report = collect_garbage(local_store, [], dry_run=False, min_age=timedelta(hours=1))

    assert report.deleted == ()
    assert local_store.exists(ref)


def test_a_kept_directory_keeps_its_files(store: ArtifactStore, tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(b"\x00" * 1000)
    (tmp_path / "model" / "config.json").write_text("{}")
    directory = store.put_directory(tmp_path / "model")
    other = store.put_bytes(b"unreferenced")

    report = collect_garbage(store, [directory.digest], dry_run=False, min_age=NOW)

    assert report.deleted == (other.digest,)
    assert report.kept == 3  # the manifest and its two files
    out = store.get_directory(directory, tmp_path / "restored")
    assert (out / "weights.bin").read_bytes() == b"\x00" * 1000


def test_gc_removes_incomplete_objects(store: ArtifactStore) -> None:
    ref = store.put_bytes(b"complete")
    orphan = "sha256:" + hashlib.sha256(b"crashed before its sidecar").hexdigest()
    path = store.layout.object(orphan)
    store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    store.fs.pipe_file(path, b"crashed before its sidecar")
    lost = store.put_bytes(b"content lost, sidecar left")
    store.fs.rm_file(store.layout.object(lost.digest))

    report = collect_garbage(store, [ref], dry_run=False, min_age=NOW)

    assert set(report.deleted) == {orphan, lost.digest}
    assert set(store.scan()) == {ref.digest}


def test_gc_removes_stale_spool_files(local_store: ArtifactStore) -> None:
    staging = Path(local_store.layout.staging)
    staging.mkdir(parents=True)
    stale, fresh = staging / ".spool-crashed.tmp", staging / ".spool-writing.tmp"
    stale.write_bytes(b"x" * 100)
    fresh.write_bytes(b"y" * 10)
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))

    preview = collect_garbage(local_store, [], dry_run=True)
    report = collect_garbage(local_store, [], dry_run=False)

    assert preview.temp_files == report.temp_files == 1
    assert report.bytes_freed == 100
    assert not stale.exists()
    assert fresh.exists()


def test_gc_ignores_foreign_files(local_store: ArtifactStore) -> None:
    objects = Path(local_store.layout.objects)
    objects.mkdir(parents=True)
    (objects / "README").write_text("not an object")

    report = collect_garbage(local_store, [], dry_run=False, min_age=NOW)

    assert report.deleted == ()
    assert (objects / "README").exists()


def test_gc_refuses_bad_arguments(store: ArtifactStore) -> None:
    with pytest.raises(InvalidInputError) as negative:
        collect_garbage(store, [], dry_run=True, min_age=timedelta(seconds=-1))
    with pytest.raises(InvalidInputError) as malformed:
        collect_garbage(store, ["latest"], dry_run=True)

    assert negative.value.code == "artifact/invalid_gc"
    assert malformed.value.code == "artifact/invalid_digest"
