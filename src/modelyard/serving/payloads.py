"""Payload logging: a sample of requests and responses, written in the background in
batches to Parquet in the artifact store, for monitoring (drift, quality) later.

``record`` never blocks a request and never fails one: it samples, then appends to a
bounded in-memory queue (a full queue drops the record and counts it). A writer thread
flushes the queue every ``flush_seconds`` or every ``flush_rows`` records, to
``<root>/payloads/<model>/date=<YYYY-MM-DD>/<time>-<id>.parquet`` with one row per
request: time, model, version, latency, trace id, and the inputs and outputs as JSON.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Payload:
    at: datetime
    model: str
    version: str
    latency_ms: float
    trace_id: str | None
    inputs: str  # JSON
    outputs: str  # JSON


def to_json(value: Any) -> str:
    """A request's inputs or a model's outputs as JSON (arrays as lists, frames as
    column lists)."""
    return json.dumps(_plain(value), default=str)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a DataFrame
        return {str(c): _plain(value[c].to_numpy()) for c in value.columns}
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return [
                v.decode(errors="replace") if isinstance(v, bytes) else v for v in value.ravel()
            ]
        return value.tolist()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


class PayloadLogger:
    """Samples and writes request/response payloads in the background.

    Args:
        root: The artifact store's URL (a folder or ``s3://bucket/prefix``).
        sample: The fraction of requests recorded (0 to 1).
        flush_rows: Records that trigger a write.
        flush_seconds: The longest a record waits to be written.
        max_queue: Records held at most; beyond, new ones are dropped (and counted).
    """

    def __init__(
        self,
        root: str,
        sample: float,
        flush_rows: int = 1_000,
        flush_seconds: float = 5.0,
        max_queue: int = 100_000,
    ) -> None:
        if not 0 <= sample <= 1:
            raise ValueError("the payload sample is a fraction between 0 and 1")
        self.root = root.rstrip("/")
        self.sample = sample
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._queue: deque[Payload] = deque(maxlen=max_queue)
        self._max_queue = max_queue
        self.dropped = 0
        self.written = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="payloads", daemon=True)
        self._thread.start()

    def record(
        self,
        model: str,
        version: str,
        inputs: Any,
        outputs: Any,
        latency_ms: float,
        trace_id: str | None,
    ) -> None:
        """Queue one request's payload if it is sampled; never blocks, never raises."""
        if self.sample <= 0 or random.random() >= self.sample:  # noqa: S311  (sampling)
            return
        try:
            payload = Payload(
                datetime.now(UTC),
                model,
                version,
                latency_ms,
                trace_id,
                to_json(inputs),
                to_json(outputs),
            )
        except Exception:  # a payload that cannot be written is not a failed request
            logger.warning("could not record a payload of %s", model, exc_info=True)
            return
        if len(self._queue) >= self._max_queue:
            self.dropped += 1
            return
        self._queue.append(payload)
        if len(self._queue) >= self.flush_rows:
            self._wake.set()

    def close(self) -> None:
        """Write what is queued, then stop the writer."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self._flush()
        self._flush()

    def _flush(self) -> None:
        batch: list[Payload] = []
        while self._queue:
            batch.append(self._queue.popleft())
        if not batch:
            return
        try:
            for model, rows in _by_model(batch).items():
                self._write(model, rows)
            self.written += len(batch)
        except Exception:
            logger.warning("could not write %d payloads", len(batch), exc_info=True)

    def _write(self, model: str, rows: list[Payload]) -> None:
        import fsspec.core  # type: ignore[import-untyped]
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        table = pa.table(
            {
                "at": pa.array([r.at for r in rows], pa.timestamp("us", tz="UTC")),
                "model": [r.model for r in rows],
                "version": [r.version for r in rows],
                "latency_ms": [r.latency_ms for r in rows],
                "trace_id": [r.trace_id for r in rows],
                "inputs": [r.inputs for r in rows],
                "outputs": [r.outputs for r in rows],
            }
        )
        day = rows[0].at.strftime("%Y-%m-%d")
        name = f"{rows[0].at.strftime('%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
        path = f"{self.root}/payloads/{model}/date={day}/{name}"
        fs, location = fsspec.core.url_to_fs(path)
        fs.makedirs(location.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(location, "wb") as handle:
            pq.write_table(table, handle)


def _by_model(batch: list[Payload]) -> dict[str, list[Payload]]:
    grouped: dict[str, list[Payload]] = {}
    for payload in batch:
        grouped.setdefault(payload.model, []).append(payload)
    return grouped


def trace_id_of(traceparent: str | None, request_id: str | None) -> str | None:
    """The W3C trace id of a request (``traceparent``), else its request id."""
    if traceparent:
        parts = traceparent.split("-")
        if len(parts) >= 2 and len(parts[1]) == 32:
            return parts[1]
    return request_id
