"""Payload logging: sampled, batched to Parquet in the background, never blocking."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from modelyard.serving.payloads import PayloadLogger, trace_id_of


def test_sampled_payloads_are_written_in_batches_to_parquet(tmp_path: Path) -> None:
    logger = PayloadLogger(str(tmp_path), sample=1.0, flush_rows=50, flush_seconds=60)
    for i in range(60):
        logger.record("fare", "3", {"x": np.array([[float(i)]])}, np.array([2.0 * i]), 1.5, f"t{i}")
    deadline = time.monotonic() + 10
    while logger.written < 50 and time.monotonic() < deadline:  # a full batch goes at once
        time.sleep(0.01)
    assert logger.written >= 50
    for i in range(60, 120):
        logger.record("fare", "3", {"x": np.array([[float(i)]])}, np.array([2.0 * i]), 1.5, f"t{i}")
    logger.close()
    files = sorted((tmp_path / "payloads" / "fare").rglob("*.parquet"))
    assert len(files) >= 2  # written in batches, not per request
    assert all(f.parent.name.startswith("date=") for f in files)
    table = pq.read_table(files[0].parents[1]).to_pandas().sort_values("latency_ms")
    assert len(table) == 120
    rows = {r.trace_id: r for r in table.itertuples()}
    assert json.loads(rows["t7"].inputs) == {"x": [[7.0]]}
    assert json.loads(rows["t7"].outputs) == [14.0]
    assert set(table["version"]) == {"3"}
    assert logger.written == 120


def test_only_a_sample_is_recorded(tmp_path: Path) -> None:
    logger = PayloadLogger(str(tmp_path), sample=0.1, flush_seconds=60)
    for _ in range(2_000):
        logger.record("fare", "1", np.zeros(1), np.zeros(1), 1.0, None)
    logger.close()
    assert 100 < logger.written < 320  # about 200
    nothing = PayloadLogger(str(tmp_path / "off"), sample=0.0)
    nothing.record("fare", "1", np.zeros(1), np.zeros(1), 1.0, None)
    nothing.close()
    assert not (tmp_path / "off").exists()


def test_a_full_queue_drops_instead_of_blocking(tmp_path: Path) -> None:
    logger = PayloadLogger(
        str(tmp_path), sample=1.0, flush_rows=10**9, flush_seconds=60, max_queue=5
    )
    for _ in range(8):
        logger.record("fare", "1", np.zeros(1), np.zeros(1), 1.0, None)
    assert logger.dropped == 3
    logger.close()
    assert logger.written == 5


def test_an_unwritable_store_loses_the_batch_not_the_server(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    logger = PayloadLogger(str(blocker), sample=1.0, flush_seconds=60)
    logger.record("fare", "1", np.zeros(1), np.zeros(1), 1.0, None)
    logger.close()  # logs a warning; raises nothing
    assert logger.written == 0


@pytest.mark.parametrize(
    ("traceparent", "request_id", "expected"),
    [
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "r1",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        (None, "r1", "r1"),
        ("garbage", None, None),
    ],
)
def test_trace_ids(traceparent: str | None, request_id: str | None, expected: str | None) -> None:
    assert trace_id_of(traceparent, request_id) == expected


def test_sample_must_be_a_fraction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        PayloadLogger(str(tmp_path), sample=1.5)
