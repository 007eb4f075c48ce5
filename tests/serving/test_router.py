"""The router over real HTTP, in front of small upstream servers: splitting, shadow
isolation, a replica that went away, activation from zero, and its statistics."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from modelyard.serving.payloads import PayloadLogger
from modelyard.serving.router import Router, create_router_app, write_routes
from tests.conftest import LiveServer

pytestmark = pytest.mark.integration


def upstream(answer: float, *, delay: float = 0.0, status: int = 200) -> Starlette:
    """A replica stand-in answering every inference with ``answer`` (or ``status``)."""

    async def infer(request: Request) -> JSONResponse:
        await request.body()
        if delay:
            await asyncio.sleep(delay)
        if status != 200:
            return JSONResponse({"error": {"code": "model/predict_failed"}}, status_code=status)
        return JSONResponse({"predictions": [answer]})

    return Starlette(routes=[Route("/invocations", infer, methods=["POST"])])


@pytest.fixture
def servers() -> Iterator[list[LiveServer]]:
    started: list[LiveServer] = []
    yield started
    for server in started:
        server.stop()


def serve(servers: list[LiveServer], app: Starlette) -> str:
    server = LiveServer(app)
    server.start()
    servers.append(server)
    return server.url


def routes(path: Path, variants: dict[str, list[str]], **extra: Any) -> None:
    weights = extra.pop("weights", {next(iter(variants)): 100})
    write_routes(
        path,
        {
            "deployment": "fare",
            "weights": weights,
            "variants": {
                name: {"model": f"m{name}", "version": name[:1], "replicas": urls}
                for name, urls in variants.items()
            },
            **extra,
        },
    )


@pytest.fixture
def router(tmp_path: Path, servers: list[LiveServer]) -> Iterator[tuple[str, Path, Router]]:
    path = tmp_path / "routes.json"
    payloads = PayloadLogger(str(tmp_path / "store"), sample=1.0, flush_seconds=0.1)
    the_router = Router(path, payloads=payloads)
    live = LiveServer(create_router_app(the_router))
    live.start()
    try:
        yield live.url, path, the_router
    finally:
        live.stop()


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_requests_follow_the_weights_and_name_their_variant(
    router: tuple[str, Path, Router], servers: list[LiveServer]
) -> None:
    url, path, _ = router
    one, two = serve(servers, upstream(1.0)), serve(servers, upstream(2.0))
    routes(path, {"primary": [one], "canary": [two]}, weights={"primary": 70, "canary": 30})
    wait_for(lambda: httpx.get(f"{url}/v2/health/ready").status_code == 200)
    seen: Counter[str] = Counter()
    with httpx.Client() as client:
        for _ in range(400):
            answer = client.post(f"{url}/invocations", json={"inputs": {"x": [1]}})
            variant = answer.headers["x-modelyard-variant"]
            assert answer.json() == {"predictions": [1.0 if variant == "primary" else 2.0]}
            seen[variant] += 1
    assert 0.2 < seen["canary"] / 400 < 0.4
    stats = httpx.get(f"{url}/router/stats", params={"since": 0}).json()["variants"]
    assert stats["primary"]["requests"] + stats["canary"]["requests"] == 400
    assert stats["canary"]["errors"] == 0
    assert stats["primary"]["p99_ms"] > 0


def test_a_slow_or_failing_shadow_never_reaches_or_delays_the_client(
    router: tuple[str, Path, Router], servers: list[LiveServer], tmp_path: Path
) -> None:
    url, path, the_router = router
    primary = serve(servers, upstream(1.0))
    slow_shadow = serve(servers, upstream(1.0, delay=2.0))
    routes(path, {"primary": [primary], "shadow": [slow_shadow]}, shadow="shadow")
    wait_for(lambda: the_router.table is not None and the_router.table.shadow == "shadow")
    with httpx.Client() as client:
        started = time.perf_counter()
        for _ in range(5):
            answer = client.post(f"{url}/invocations", json={"inputs": {"x": [1]}})
            assert answer.json() == {"predictions": [1.0]}
            assert answer.headers["x-modelyard-variant"] == "primary"
        assert time.perf_counter() - started < 1.5  # five answers, each shadow takes 2 s
    wait_for(lambda: the_router.shadow.agree == 5, timeout=10)

    failing = serve(servers, upstream(0.0, status=500))
    routes(path, {"primary": [primary], "shadow": [failing]}, shadow="shadow")
    wait_for(
        lambda: (
            the_router.table is not None
            and the_router.table.variants["shadow"].replicas == (failing,)
        )
    )
    with httpx.Client() as client:
        for _ in range(5):
            answer = client.post(f"{url}/invocations", json={"inputs": {"x": [1]}})
            assert answer.status_code == 200
            assert answer.json() == {"predictions": [1.0]}
    wait_for(lambda: the_router.shadow.errors == 5)
    assert the_router.shadow.disagree == 5  # a 500 is not the primary's answer
    stats = httpx.get(f"{url}/router/stats", params={"since": 0}).json()
    assert stats["variants"]["primary"]["errors"] == 0
    assert "shadow" not in stats["variants"] or stats["variants"]["shadow"]["requests"] == 0
    assert stats["shadow"]["requests"] == 10
    # The comparisons are logged to Parquet for later analysis.
    wait_for(lambda: the_router.payloads is not None and the_router.payloads.written >= 10)
    logged = list((tmp_path / "store" / "payloads" / "fare-shadow").rglob("*.parquet"))
    assert logged


def test_a_replica_that_refuses_connections_is_skipped(
    router: tuple[str, Path, Router], servers: list[LiveServer]
) -> None:
    url, path, _ = router
    alive = serve(servers, upstream(1.0))
    routes(path, {"primary": [alive, "http://127.0.0.1:9"]})  # port 9: nothing listens
    wait_for(lambda: httpx.get(f"{url}/v2/health/ready").status_code == 200)
    with httpx.Client() as client:
        answers = [client.post(f"{url}/invocations", json={}).status_code for _ in range(30)]
    assert answers == [200] * 30


def test_a_variant_scaled_to_zero_holds_requests_until_a_replica_is_ready(
    router: tuple[str, Path, Router], servers: list[LiveServer]
) -> None:
    url, path, the_router = router
    routes(path, {"primary": []}, activation_seconds=20)
    wait_for(lambda: the_router.table is not None)
    results: list[httpx.Response] = []
    waiting = threading.Thread(
        target=lambda: results.append(httpx.post(f"{url}/invocations", json={}, timeout=30))
    )
    waiting.start()
    wait_for(lambda: httpx.get(f"{url}/router/stats").json()["variants"]["primary"]["pending"] == 1)
    routes(path, {"primary": [serve(servers, upstream(3.0))]}, activation_seconds=20)
    waiting.join(timeout=10)
    assert len(results) == 1
    assert results[0].json() == {"predictions": [3.0]}


def test_without_a_replica_in_time_the_answer_is_a_clear_503(
    router: tuple[str, Path, Router],
) -> None:
    url, path, the_router = router
    routes(path, {"primary": []}, activation_seconds=0.3)
    wait_for(lambda: the_router.table is not None)
    answer = httpx.post(f"{url}/invocations", json={})
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "deployment/no_replica"
    assert httpx.get(f"{url}/v2/health/ready").status_code == 503


def test_an_unreadable_routes_file_keeps_the_last_good_routes(
    router: tuple[str, Path, Router], servers: list[LiveServer]
) -> None:
    url, path, the_router = router
    routes(path, {"primary": [serve(servers, upstream(1.0))]})
    wait_for(lambda: the_router.table is not None)
    path.write_text("{not json")
    time.sleep(0.5)
    assert httpx.post(f"{url}/invocations", json={}).json() == {"predictions": [1.0]}
    assert json.loads(httpx.get(f"{url}/router/stats").text)["generation"] is not None
