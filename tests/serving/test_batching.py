"""Adaptive batching: merged predictions equal unbatched ones, a bad request fails alone."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pandas as pd
import pytest

from modelyard.serving.batching import Batcher


def _model(rows: np.ndarray) -> np.ndarray:
    if np.isnan(rows).any():
        raise ValueError("NaN in the input")
    time.sleep(0.002)  # a predict that costs about the same for 1 row or 64
    return rows @ np.array([1.0, -2.0, 0.5])


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows() -> None:
    sizes: list[int] = []
    rng = np.random.default_rng(0)
    requests = [rng.normal(size=(int(rng.integers(1, 5)), 3)) for _ in range(200)]

    async def main() -> list[np.ndarray]:
        batcher = Batcher(_model, max_batch_size=32, max_latency_ms=5, on_batch=sizes.append)
        try:
            return list(await asyncio.gather(*(batcher.predict(r) for r in requests)))
        finally:
            await batcher.close()

    answers = asyncio.run(main())
    for rows, answer in zip(requests, answers, strict=True):
        np.testing.assert_array_equal(answer, _model(rows))  # as if predicted alone
    assert sum(sizes) == sum(len(r) for r in requests)
    assert max(sizes) <= 32
    assert len(sizes) < len(requests) / 4  # merged: far fewer predict calls than requests


def test_a_lone_request_is_not_held_back_for_company() -> None:
    sizes: list[int] = []

    async def main() -> np.ndarray:
        batcher = Batcher(_model, max_batch_size=64, max_latency_ms=1, on_batch=sizes.append)
        try:
            return await batcher.predict(np.ones((1, 3)))
        finally:
            await batcher.close()

    np.testing.assert_array_equal(asyncio.run(main()), [-0.5])
    assert sizes == [1]


def test_a_request_that_breaks_the_model_fails_alone() -> None:
    good = [np.full((2, 3), float(i)) for i in range(10)]
    bad = np.array([[1.0, np.nan, 0.0]])

    async def main() -> list[object]:
        batcher = Batcher(_model, max_batch_size=64, max_latency_ms=20)
        try:
            calls = [batcher.predict(r) for r in (*good[:5], bad, *good[5:])]
            return list(await asyncio.gather(*calls, return_exceptions=True))
        finally:
            await batcher.close()

    answers = asyncio.run(main())
    assert isinstance(answers[5], ValueError)
    for rows, answer in zip(good, answers[:5] + answers[6:], strict=True):
        np.testing.assert_array_equal(answer, _model(rows))


def test_dataframes_are_batched_by_rows() -> None:
    frames = [pd.DataFrame({"a": [i, i + 1], "b": [2 * i, 0]}) for i in range(20)]
    threads: set[str] = set()

    def total(frame: pd.DataFrame) -> np.ndarray:
        threads.add(threading.current_thread().name)
        return (frame["a"] + frame["b"]).to_numpy()

    async def main() -> list[np.ndarray]:
        batcher = Batcher(total, max_batch_size=16, max_latency_ms=5)
        try:
            return list(await asyncio.gather(*(batcher.predict(f) for f in frames)))
        finally:
            await batcher.close()

    for frame, answer in zip(frames, asyncio.run(main()), strict=True):
        np.testing.assert_array_equal(answer, total(frame))
    assert len(threads) == 2  # the model's own predict thread (and this test's call)


def test_a_model_answering_the_wrong_number_of_rows_is_an_error() -> None:
    async def main() -> list[object]:
        batcher = Batcher(lambda rows: np.zeros(1), max_batch_size=8, max_latency_ms=10)
        try:
            calls = [batcher.predict(np.ones((2, 3))) for _ in range(3)]
            return list(await asyncio.gather(*calls, return_exceptions=True))
        finally:
            await batcher.close()

    answers = asyncio.run(main())
    assert all(isinstance(a, ValueError) for a in answers)
    assert str(answers[0]) == "the model returned 1 rows for 2 inputs"


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Batcher(_model, max_batch_size=0)
