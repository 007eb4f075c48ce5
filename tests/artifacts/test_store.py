"""The store on a local folder and on S3: round trips, idempotence, errors, atomicity."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from modelyard.artifacts import ArtifactCorruptError, ArtifactRef, ArtifactStore, from_settings
from modelyard.config import Settings
from modelyard.errors import ConfigurationError, InvalidInputError, NotFoundError

MISSING = "sha256:" + "0" * 64


def _corrupt(store: ArtifactStore, ref: ArtifactRef, data: bytes = b"bit rot") -> None:
    store.fs.pipe_file(store.layout.object(ref.digest), data)


# ---- bytes, files, JSON ---------------------------------------------------------------


def test_bytes_round_trip_and_content_address(store: ArtifactStore) -> None:
    ref = store.put_bytes(b"hello", media_type="text/plain", metadata={"who": "me"})

    assert ref.digest == "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert (ref.kind, ref.size, ref.media_type, ref.metadata) == (
        "file",
        5,
        "text/plain",
        {"who": "me"},
    )
    assert store.get_bytes(ref) == b"hello"
    assert store.get_bytes(ref.digest) == b"hello"
    with store.open(ref) as handle:
        assert handle.read() == b"hello"
    assert store.info(ref.digest) == ref
    assert store.exists(ref)
    assert store.exists(ref.digest)
    assert store.verify(ref) == ref


def test_layout_puts_content_and_sidecar_under_objects(store: ArtifactStore) -> None:
    ref = store.put_bytes(b"layout")
    hex_ = ref.digest.removeprefix("sha256:")
    content = f"{store.layout.root}/objects/sha256/{hex_[:2]}/{hex_[2:]}"

    assert store.fs.cat_file(content) == b"layout"
    sidecar = json.loads(store.fs.cat_file(content + ".json"))
    assert sidecar["digest"] == ref.digest
    assert {"kind", "size", "media_type", "metadata", "created_at"} <= sidecar.keys()


def test_putting_equal_content_twice_stores_one_object(store: ArtifactStore) -> None:
    first = store.put_bytes(b"same")
    second = store.put_bytes(bytearray(b"same"))

    assert first == second
    assert [ref.digest for ref in store.list()] == [first.digest]


def test_put_file_streams_a_file_and_guesses_its_media_type(
    store: ArtifactStore, tmp_path: Path
) -> None:
    source = tmp_path / "report.json"
    source.write_bytes(b"x" * (3 * 1024 * 1024 + 7))  # several spool chunks

    ref = store.put_file(source)

    assert (ref.kind, ref.size, ref.media_type) == ("file", 3 * 1024 * 1024 + 7, "application/json")
    assert store.get_bytes(ref) == source.read_bytes()
    assert store.put_bytes(source.read_bytes()).digest == ref.digest


def test_put_file_refuses_what_is_not_a_file(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as missing:
        store.put_file(tmp_path / "absent.bin")
    with pytest.raises(InvalidInputError) as folder:
        store.put_file(tmp_path)

    assert missing.value.code == folder.value.code == "artifact/invalid_source"


def test_json_is_canonical(store: ArtifactStore) -> None:
    first = store.put_json({"b": [1, 2.5, None], "a": {"z": True, "é": "ü"}})
    second = store.put_json({"a": {"é": "ü", "z": True}, "b": [1, 2.5, None]})

    assert first == second
    assert first.kind == "json"
    assert first.media_type == "application/json"
    assert store.get_bytes(first) == '{"a":{"z":true,"é":"ü"},"b":[1,2.5,null]}'.encode()
    assert store.get_json(first) == {"a": {"z": True, "é": "ü"}, "b": [1, 2.5, None]}


@pytest.mark.parametrize(
    ("value", "type_name"), [({1, 2}, "set"), ({"when": object()}, "object"), (b"raw", "bytes")]
)
def test_json_refuses_values_it_cannot_represent_naming_the_type(
    store: ArtifactStore, value: object, type_name: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        store.put_json(value)

    assert caught.value.code == "artifact/unsupported_type"
    assert type_name in caught.value.message
    assert list(store.list()) == []


def test_json_refuses_nan(store: ArtifactStore) -> None:
    with pytest.raises(InvalidInputError) as caught:
        store.put_json({"loss": float("nan")})

    assert caught.value.code == "artifact/invalid_json"


def test_metadata_must_be_strings(store: ArtifactStore) -> None:
    with pytest.raises(InvalidInputError) as caught:
        store.put_bytes(b"x", metadata={"epochs": 3})  # type: ignore[dict-item]

    assert caught.value.code == "artifact/invalid_metadata"
    assert list(store.list()) == []


# ---- directories ------------------------------------------------------------------------


def _tree(root: Path) -> Path:
    (root / "model" / "weights").mkdir(parents=True)
    (root / "model" / "config.json").write_text('{"layers": 3}')
    (root / "model" / "weights" / "w.bin").write_bytes(bytes(range(256)) * 100)
    (root / "model" / "empty.txt").write_bytes(b"")
    (root / "model" / "naïve name.txt").write_text("unicode")
    return root / "model"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_directory_round_trip(store: ArtifactStore, tmp_path: Path) -> None:
    source = _tree(tmp_path / "src")

    ref = store.put_directory(source)
    dest = store.get_directory(ref, tmp_path / "out" / "model")

    assert ref.kind == "directory"
    assert ref.metadata["num_files"] == "4"
    assert _files(dest) == _files(source)
    assert store.manifest(ref).files["weights/w.bin"].size == 25600
    assert store.put_directory(source) == ref  # equal trees, equal digests


def test_directory_destination_must_be_empty(store: ArtifactStore, tmp_path: Path) -> None:
    ref = store.put_directory(_tree(tmp_path / "src"))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")

    with pytest.raises(InvalidInputError) as caught:
        store.get_directory(ref, tmp_path / "busy")

    assert caught.value.code == "artifact/destination_not_empty"
    assert _files(tmp_path / "busy") == {"keep.txt": b"mine"}


def test_a_manifest_cannot_write_outside_its_destination(
    store: ArtifactStore, tmp_path: Path
) -> None:
    payload = store.put_bytes(b"evil")
    manifest = {
        "format": "modelyard.directory/v1",
        "files": {"../escaped.txt": {"digest": payload.digest, "size": 4}},
    }
    ref = store.put_bytes(json.dumps(manifest).encode(), kind="directory")

    with pytest.raises(InvalidInputError) as caught:
        store.get_directory(ref, tmp_path / "dest")

    assert caught.value.code == "artifact/not_readable"
    assert not (tmp_path / "escaped.txt").exists()


def test_put_directory_refuses_a_file(store: ArtifactStore, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")

    with pytest.raises(InvalidInputError) as caught:
        store.put_directory(tmp_path / "f")

    assert caught.value.code == "artifact/invalid_source"


# ---- missing and corrupt ----------------------------------------------------------------


def test_missing_artifacts_raise_not_found(store: ArtifactStore, tmp_path: Path) -> None:
    assert not store.exists(MISSING)
    calls: list[Callable[[], object]] = [
        lambda: store.info(MISSING),
        lambda: store.open(MISSING),
        lambda: store.get_bytes(MISSING),
        lambda: store.get_json(MISSING),
        lambda: store.read_table(MISSING),
        lambda: store.scan_table(MISSING),
        lambda: store.local_path(MISSING),
        lambda: store.verify(MISSING),
        lambda: store.get_directory(MISSING, tmp_path / "d"),
    ]
    for call in calls:
        with pytest.raises(NotFoundError) as caught:
            call()
        assert caught.value.code == "artifact/not_found"
        assert caught.value.details == {"digest": MISSING}


def test_malformed_digests_are_invalid_input(store: ArtifactStore) -> None:
    for bad in ("sha256:abc", "md5:" + "0" * 64, "sha256:" + "A" * 64, "../../etc/passwd"):
        with pytest.raises(InvalidInputError) as caught:
            store.get_bytes(bad)
        assert caught.value.code == "artifact/invalid_digest"


def test_corruption_is_detected(store: ArtifactStore) -> None:
    ref = store.put_json({"metric": 0.93})
    _corrupt(store, ref)

    for call in (store.verify, store.get_bytes, store.get_json):
        with pytest.raises(ArtifactCorruptError) as caught:
            call(ref)
        assert caught.value.code == "artifact/corrupt"
        assert caught.value.details["digest"] == ref.digest
    with store.open(ref) as handle:  # documented: open does not verify
        assert handle.read() == b"bit rot"


def test_a_missing_file_of_a_directory_is_not_found(store: ArtifactStore, tmp_path: Path) -> None:
    ref = store.put_directory(_tree(tmp_path / "src"))
    child = store.manifest(ref).files["config.json"].digest
    store.fs.rm_file(store.layout.object(child))

    with pytest.raises(NotFoundError):
        store.get_directory(ref, tmp_path / "out")


def test_a_corrupt_file_of_a_directory_is_detected(store: ArtifactStore, tmp_path: Path) -> None:
    ref = store.put_directory(_tree(tmp_path / "src"))
    child = store.manifest(ref).files["weights/w.bin"]
    store.fs.pipe_file(store.layout.object(child.digest), b"x" * child.size)

    with pytest.raises(ArtifactCorruptError):
        store.get_directory(ref, tmp_path / "out")
    leftovers = [p for p in (tmp_path / "out").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


# ---- atomicity ----------------------------------------------------------------------------


def test_a_crash_before_the_sidecar_leaves_nothing_visible(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = store.put_bytes(b"already there")

    def crash(*_: object) -> None:
        raise OSError("power cut")

    with monkeypatch.context() as patch:
        patch.setattr(store, "_write_sidecar", crash)
        with pytest.raises(OSError, match="power cut"):
            store.put_bytes(b"half written")
    digest = _sha(b"half written")

    assert store.fs.exists(store.layout.object(digest))  # the content did land ...
    assert not store.exists(digest)  # ... but without its sidecar it is absent
    assert [ref.digest for ref in store.list()] == [kept.digest]
    with pytest.raises(NotFoundError):
        store.get_bytes(digest)
    assert store.put_bytes(b"half written").digest == digest  # a retry completes it
    assert store.get_bytes(digest) == b"half written"


def _sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def test_spool_files_are_removed_after_puts_and_failures(local_store: ArtifactStore) -> None:
    local_store.put_bytes(b"ok")
    with pytest.raises(InvalidInputError):
        local_store.put_bytes(b"x", metadata={"n": 1})  # type: ignore[dict-item]

    assert local_store.fs.find(local_store.layout.staging) == []


# ---- paths, listing, construction ----------------------------------------------------


def test_local_path_is_the_object_file_on_local_stores_only(store: ArtifactStore) -> None:
    ref = store.put_bytes(b"in place")

    path = store.local_path(ref)

    if store.is_local:
        assert path is not None
        assert path.read_bytes() == b"in place"
    else:
        assert path is None


def test_list_returns_every_artifact_in_digest_order(store: ArtifactStore) -> None:
    refs = [store.put_bytes(str(i).encode()) for i in range(5)] + [store.put_json([1])]

    assert list(store.list()) == sorted(refs, key=lambda ref: ref.digest)


def test_plain_paths_work_like_file_urls(tmp_path: Path) -> None:
    by_path = ArtifactStore(str(tmp_path / "a"))
    by_url = ArtifactStore((tmp_path / "a").as_uri())

    ref = by_path.put_bytes(b"shared")

    assert by_url.get_bytes(ref) == b"shared"
    assert by_path.is_local
    assert by_url.is_local


def test_unknown_url_schemes_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as caught:
        ArtifactStore("nosuchscheme://bucket/x")

    assert caught.value.code == "artifact/invalid_url"


def test_from_settings_uses_the_home_folder_and_creates_nothing_up_front(
    settings: Settings,
) -> None:
    store = from_settings(settings)

    assert store.url == settings.resolved_artifacts_url
    assert not (settings.home / "artifacts").exists()
    ref = store.put_bytes(b"x")
    assert store.local_path(ref) == (
        settings.home / "artifacts" / "objects" / "sha256" / ref.hex[:2] / ref.hex[2:]
    )


@pytest.mark.integration
def test_s3_settings_come_from_the_aws_environment(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # skip_instance_cache: fsspec would otherwise reuse a client built from another env.
    store = ArtifactStore(
        f"s3://modelyard-artifacts/{uuid.uuid4().hex}", {"skip_instance_cache": True}
    )

    ref = store.put_bytes(b"via env")

    assert store.get_bytes(ref) == b"via env"


# ---- refs -------------------------------------------------------------------------------


def test_refs_are_frozen_hashable_and_json_round_trip() -> None:
    ref = ArtifactRef(
        digest=_sha(b"x"), kind="table", size=1, media_type="x/y", metadata={"num_rows": "1"}
    )

    assert ArtifactRef.model_validate_json(ref.model_dump_json()) == ref
    assert ArtifactRef.model_validate(json.loads(json.dumps(ref.model_dump(mode="json")))) == ref
    assert len({ref, ref.model_copy()}) == 1
    with pytest.raises(ValidationError):
        ref.size = 2  # type: ignore[misc]
    with pytest.raises(ValidationError):
        ArtifactRef(digest="sha256:nope", kind="file", size=1, media_type="x/y")
    with pytest.raises(ValidationError):
        ArtifactRef(digest=_sha(b"x"), kind="model", size=1, media_type="x/y")
