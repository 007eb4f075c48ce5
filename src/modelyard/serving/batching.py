"""Adaptive batching: concurrent requests to one model merged into one predict call.

A request's rows wait until either ``max_batch_size`` rows are queued or
``max_latency_ms`` has passed since the oldest queued request arrived; then every queued
request (up to the limit) is predicted at once, in a thread of the model's own, and the
outputs are split back in order. While a batch is predicting, new requests queue, so the
batch size follows the load: one row when idle, large batches under pressure.

A batch that raises is predicted again request by request, so a request that breaks
the model fails alone and the others still get their answers.

A caller may pass a :class:`BatchTiming` to learn when its rows were queued and
predicted, and in how large a batch (the request's trace spans are made from it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Predict = Callable[[Any], Any]


@dataclass
class BatchTiming:
    """When one request's rows were queued and predicted (``time.time_ns()`` readings,
    the clock trace spans use) and the rows of the batch they were predicted in."""

    queued_ns: int = 0
    started_ns: int = 0
    finished_ns: int = 0
    batch_rows: int = 0


def timed_call(predict: Predict, rows: Any) -> tuple[Any, int, int]:
    """``predict(rows)`` with the clock read before and after (run in the predict
    thread, so a queue wait for the thread is not counted as predicting)."""
    started = time.time_ns()
    output = predict(rows)
    return output, started, time.time_ns()


@dataclass
class _Pending:
    rows: Any  # a numpy array or a pandas DataFrame, rows along the first axis
    count: int
    future: asyncio.Future[Any]
    timing: BatchTiming | None = None
    arrived: float = field(default_factory=time.monotonic)

    def predicted(self, started: int, finished: int, batch_rows: int) -> None:
        if self.timing is not None:
            self.timing.started_ns = started
            self.timing.finished_ns = finished
            self.timing.batch_rows = batch_rows


class Batcher:
    """Merges concurrent :meth:`predict` calls into batches for one model.

    Args:
        predict: The model's predict on a batch (rows along the first axis).
        max_batch_size: Rows predicted at once at the most.
        max_latency_ms: The longest the first queued request waits for company.
        on_batch: Called with each batch's row count (e.g. a histogram metric).
    """

    def __init__(
        self,
        predict: Predict,
        max_batch_size: int = 64,
        max_latency_ms: float = 2.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency_ms / 1000
        self._on_batch = on_batch or (lambda _rows: None)
        self._queue: list[_Pending] = []
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="predict")

    async def predict(self, rows: Any, timing: BatchTiming | None = None) -> Any:
        """The model's output for ``rows``, predicted in a batch with others; ``timing``
        (when given) is filled in with when they were queued and predicted."""
        loop = asyncio.get_running_loop()
        if timing is not None:
            timing.queued_ns = time.time_ns()
        if self._arrived is None:
            self._arrived = asyncio.Event()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run())
        pending = _Pending(rows, len(rows), loop.create_future(), timing)
        self._queue.append(pending)
        self._arrived.set()
        return await pending.future

    async def close(self) -> None:
        """Stop the batching task (queued requests are failed) and the predict thread."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("the model is unloading"))
        self._queue.clear()
        self._thread.shutdown(wait=True)

    async def _run(self) -> None:
        assert self._arrived is not None
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            while self._queue:
                await self._gather()
                batch = self._take()
                await self._predict_batch(batch)

    async def _gather(self) -> None:
        """Wait for company until the batch is full or the oldest request's time is up."""
        assert self._arrived is not None
        while sum(p.count for p in self._queue) < self.max_batch_size:
            left = self._queue[0].arrived + self.max_latency - time.monotonic()
            if left <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=left)
            except TimeoutError:
                return

    def _take(self) -> list[_Pending]:
        """The oldest requests that fit one batch (always at least one)."""
        batch: list[_Pending] = []
        rows = 0
        while self._queue and (not batch or rows + self._queue[0].count <= self.max_batch_size):
            pending = self._queue.pop(0)
            if pending.future.done():  # its client gave up
                continue
            batch.append(pending)
            rows += pending.count
        return batch

    async def _predict_batch(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        loop = asyncio.get_running_loop()
        rows = sum(p.count for p in batch)
        self._on_batch(rows)
        try:
            merged = concat([p.rows for p in batch])
            outputs, started, finished = await loop.run_in_executor(
                self._thread, timed_call, self._predict, merged
            )
            parts = split(outputs, [p.count for p in batch])
        except Exception:
            if len(batch) == 1:
                await self._predict_alone(batch[0])
                return
            for pending in batch:  # find the request that breaks it: each alone
                await self._predict_alone(pending)
            return
        for pending, part in zip(batch, parts, strict=True):
            pending.predicted(started, finished, rows)
            if not pending.future.done():
                pending.future.set_result(part)

    async def _predict_alone(self, pending: _Pending) -> None:
        loop = asyncio.get_running_loop()
        try:
            output, started, finished = await loop.run_in_executor(
                self._thread, timed_call, self._predict, pending.rows
            )
            (output,) = split(output, [pending.count])
            pending.predicted(started, finished, pending.count)
        except Exception as exc:
            if not pending.future.done():
                pending.future.set_exception(exc)
            return
        if not pending.future.done():
            pending.future.set_result(output)


def concat(parts: Sequence[Any]) -> Any:
    """Rows of several requests as one batch (numpy arrays or pandas DataFrames)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if isinstance(first, np.ndarray):
        return np.concatenate(parts, axis=0)
    import pandas as pd  # type: ignore[import-untyped]

    return pd.concat(parts, axis=0, ignore_index=True)


def split(outputs: Any, counts: Sequence[int]) -> list[Any]:
    """A batch's outputs cut back into each request's rows.

    Raises:
        ValueError: the model returned another number of rows than it was given.
    """
    if isinstance(outputs, dict):
        pieces = {key: split(value, counts) for key, value in outputs.items()}
        return [{key: pieces[key][i] for key in pieces} for i in range(len(counts))]
    total = len(outputs)
    if total != sum(counts):
        raise ValueError(f"the model returned {total} rows for {sum(counts)} inputs")
    if len(counts) == 1:
        return [outputs]
    bounds = np.cumsum(counts)[:-1]
    if isinstance(outputs, np.ndarray):
        return list(np.split(outputs, bounds))
    starts = [0, *bounds.tolist()]
    ends = [*bounds.tolist(), total]
    return [
        outputs.iloc[s:e] if hasattr(outputs, "iloc") else outputs[s:e]
        for s, e in zip(starts, ends, strict=True)
    ]
