"""Tables: deterministic Parquet from every supported source, streaming, atomic on failure."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.dataset as ds  # type: ignore[import-untyped]
import pytest

from modelyard.artifacts import ROW_GROUP_ROWS, ArtifactCorruptError, ArtifactStore
from modelyard.errors import InvalidInputError

ROWS = ROW_GROUP_ROWS + 70_000  # more than one row group, and a partial last one


@pytest.fixture(scope="module")
def table() -> Any:
    ids = pa.array(range(ROWS), pa.int64())
    return pa.table(
        {
            "id": ids,
            "score": pa.array([i / 7 if i % 11 else None for i in range(ROWS)], pa.float64()),
            "name": pa.array([f"customer-{i % 5000}" for i in range(ROWS)], pa.string()),
        }
    )


def test_table_round_trip(store: ArtifactStore, table: Any) -> None:
    ref = store.put_table(table)

    assert ref.kind == "table"
    assert ref.media_type == "application/vnd.apache.parquet"
    assert ref.metadata["num_rows"] == str(ROWS)
    assert ref.metadata["num_columns"] == "3"
    assert ref.metadata["schema"] == "id: int64\nscore: double\nname: string"
    assert store.read_table(ref).equals(table)
    assert store.read_table(ref, columns=["name"]).column_names == ["name"]
    dataset = store.scan_table(ref)
    assert dataset.count_rows() == ROWS
    assert dataset.to_table(filter=ds.field("id") < 10).num_rows == 10
    assert store.verify(ref) == ref


def test_equal_tables_built_differently_have_equal_digests(
    store: ArtifactStore, table: Any
) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(
        {
            "id": table["id"].to_numpy(),
            "score": table["score"].to_pandas(),
            "name": pd.array(table["name"].to_pylist(), dtype=pd.ArrowDtype(pa.string())),
        }
    )
    relation = duckdb.connect().from_arrow(table).order("id")

    refs = {
        "table": store.put_table(table),
        "rechunked table": store.put_table(
            pa.Table.from_batches(table.to_batches(max_chunksize=999))
        ),
        "batches": store.put_table(iter(table.to_batches(max_chunksize=10_000))),
        "reader": store.put_table(
            pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=333))
        ),
        "duckdb": store.put_table(relation),
        "pandas": store.put_table(frame),
    }

    assert {name: ref.digest for name, ref in refs.items()} == {
        name: refs["table"].digest for name in refs
    }
    assert len(list(store.list())) == 1


def test_a_local_table_can_be_read_in_place_by_duckdb(
    local_store: ArtifactStore, table: Any
) -> None:
    path = local_store.local_path(local_store.put_table(table))

    assert path is not None
    count = duckdb.execute("select count(*) from read_parquet(?)", [str(path)]).fetchall()
    assert count == [(ROWS,)]


def test_caller_metadata_cannot_override_the_computed_facts(
    store: ArtifactStore, table: Any
) -> None:
    ref = store.put_table(table.slice(0, 10), metadata={"num_rows": "999", "source": "crm"})

    assert ref.metadata["num_rows"] == "10"
    assert ref.metadata["source"] == "crm"


def test_empty_tables_keep_their_schema(store: ArtifactStore) -> None:
    schema = pa.schema([("a", pa.int32()), ("b", pa.timestamp("ms", tz="UTC"))])

    ref = store.put_table(schema.empty_table())

    assert ref.metadata["num_rows"] == "0"
    assert store.read_table(ref).schema == schema


@pytest.mark.parametrize(
    ("data", "type_name"),
    [(42, "int"), ({"a": [1, 2]}, "dict"), ("a,b\n1,2", "str"), ([1, 2], "int")],
)
def test_unsupported_types_are_refused_naming_the_type(
    store: ArtifactStore, data: object, type_name: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        store.put_table(data)

    assert caught.value.code == "artifact/unsupported_type"
    assert caught.value.details["type"] == f"builtins.{type_name}"
    assert type_name in caught.value.message
    assert list(store.list()) == []


def test_batches_must_share_a_schema(store: ArtifactStore) -> None:
    batches = [pa.record_batch({"a": [1]}), pa.record_batch({"a": ["x"]})]

    with pytest.raises(InvalidInputError) as caught:
        store.put_table(batches)

    assert caught.value.code == "artifact/invalid_table"
    assert list(store.list()) == []


def test_an_empty_iterable_has_no_schema(store: ArtifactStore) -> None:
    with pytest.raises(InvalidInputError) as caught:
        store.put_table(iter([]))

    assert caught.value.code == "artifact/invalid_table"


def test_a_put_that_fails_midway_leaves_nothing(store: ArtifactStore, table: Any) -> None:
    existing = store.put_json({"existing": True})
    before = list(store.list())

    def batches() -> Iterator[Any]:
        yield from table.to_batches(max_chunksize=50_000)  # a row group gets written ...
        raise RuntimeError("upstream query failed")  # ... then the source dies

    with pytest.raises(RuntimeError, match="upstream query failed"):
        store.put_table(batches())

    assert list(store.list()) == before
    assert set(store.scan()) == {existing.digest}  # no object, no sidecar
    if store.is_local:
        assert store.fs.find(store.layout.staging) == []


def test_a_corrupt_table_is_reported_as_corrupt(store: ArtifactStore, table: Any) -> None:
    ref = store.put_table(table.slice(0, 100))
    store.fs.pipe_file(store.layout.object(ref.digest), b"PAR1 not really parquet PAR1")

    with pytest.raises(ArtifactCorruptError):
        store.read_table(ref)
    with pytest.raises(ArtifactCorruptError):
        store.scan_table(ref)


def test_reading_a_json_artifact_as_a_table_is_invalid_input(store: ArtifactStore) -> None:
    ref = store.put_json({"not": "a table"})

    with pytest.raises(InvalidInputError) as caught:
        store.read_table(ref)

    assert caught.value.code == "artifact/not_readable"


STREAMING_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np, pyarrow as pa
    from modelyard.artifacts import ArtifactStore

    rows, batch_rows = int(sys.argv[2]), 50_000
    schema = pa.schema([("id", pa.int64()), ("x", pa.float64()), ("y", pa.float64()),
                        ("z", pa.int64())])

    def batches():
        for start in range(0, rows, batch_rows):
            ids = np.arange(start, min(start + batch_rows, rows), dtype=np.int64)
            yield pa.record_batch([ids, ids * 0.5, ids * 0.25, ids % 7], schema=schema)

    store = ArtifactStore(sys.argv[1])
    # Warm up: the first Parquet write loads codecs and allocator arenas once.
    store.put_table(pa.table({"id": np.arange(200_000), "x": np.arange(200_000) * 0.5}))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ref = store.put_table(pa.RecordBatchReader.from_batches(schema, batches()))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"num_rows": ref.metadata["num_rows"], "rss_growth": (after - before) * 1024,
                      "read_rows": store.scan_table(ref).count_rows()}))
    """
)


def test_put_table_streams_a_large_reader_in_bounded_memory(tmp_path: Path) -> None:
    rows = 3_000_000
    materialised = rows * 4 * 8  # bytes the four int64/float64 columns would take at once

    done = subprocess.run(
        [sys.executable, "-c", STREAMING_SCRIPT, (tmp_path / "store").as_uri(), str(rows)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(done.stdout)

    assert result["num_rows"] == str(rows)
    assert result["read_rows"] == rows
    # A materialised table would raise the peak by ~96 MB; streaming holds one row group.
    assert result["rss_growth"] < materialised / 4, result
