"""The router: a small proxy in front of a deployment's replicas.

It picks a variant per request (header rules, then a sticky key, then the weights),
sends the request to that variant's least busy ready replica, and answers with the
replica's answer and the variant's name in ``x-modelyard-variant``. A shadow variant gets
a copy of a share of the requests after the primary has answered, in the background and
with bounded concurrency: clients only ever see the primary's answer and never wait for
the shadow. Both answers are compared (and logged when payload logging is on).

Its routes come from a JSON file the controller rewrites atomically (on Kubernetes, a
mounted ConfigMap); it re-reads the file when it changes. It measures what the
controller needs: requests, errors and latency per variant over any recent span
(``GET /router/stats?since=<unix time>``), in-flight requests integrated over time (the
autoscaler's metric), requests waiting for a variant scaled to zero, and the shadow
comparison; and the DESIGN metrics at ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelyard.errors import InvalidInputError, ModelyardError
from modelyard.monitoring.metrics import ServingMetrics
from modelyard.serving.payloads import PayloadLogger, trace_id_of
from modelyard.specs.deployments import VARIANT_HEADER

logger = logging.getLogger(__name__)

JSON = "application/json"
EVENTS_KEPT = 200_000
SHADOW_CONCURRENCY = 32
DOWN_SECONDS = 5.0
FORWARDED_HEADERS = ("content-type", "inference-header-content-length", "traceparent")


class NoReplicaError(ModelyardError):
    http_status = 503
    default_code = "deployment/no_replica"


class ReplicaUnreachableError(ModelyardError):
    http_status = 502
    default_code = "deployment/replica_unreachable"


@dataclass(frozen=True)
class VariantRoute:
    name: str
    model: str
    version: str
    replicas: tuple[str, ...]  # base URLs of ready replicas


@dataclass(frozen=True)
class Answer:
    """A replica's answer, read whole."""

    status_code: int
    content: bytes
    headers: dict[str, str]  # the headers passed back, by lowercase name


PASSED_BACK = ("content-type", "inference-header-content-length")


@dataclass(frozen=True)
class RouteTable:
    """What the controller tells the router: variants, replicas and rules."""

    deployment: str
    generation: int
    weights: dict[str, int]
    variants: dict[str, VariantRoute]
    shadow: str | None = None
    shadow_percent: int = 100
    matches: tuple[tuple[str, str, str], ...] = ()  # (header, value, variant)
    sticky_header: str | None = None
    activation_seconds: float = 60.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RouteTable:
        return cls(
            deployment=str(data["deployment"]),
            generation=int(data.get("generation", 0)),
            weights={str(k): int(v) for k, v in data["weights"].items()},
            variants={
                name: VariantRoute(
                    name=name,
                    model=str(v.get("model", "")),
                    version=str(v.get("version", "")),
                    replicas=tuple(v.get("replicas", ())),
                )
                for name, v in data["variants"].items()
            },
            shadow=data.get("shadow"),
            shadow_percent=int(data.get("shadow_percent", 100)),
            matches=tuple(
                (m["header"].lower(), m["value"], m["variant"]) for m in data.get("matches", ())
            ),
            sticky_header=(data.get("sticky_header") or None),
            activation_seconds=float(data.get("activation_seconds", 60.0)),
        )

    def choose(self, headers: Any) -> str:
        """The variant a request with ``headers`` goes to."""
        wanted = headers.get(VARIANT_HEADER)
        if wanted in self.variants and wanted != self.shadow:
            return str(wanted)
        for header, value, variant in self.matches:
            if headers.get(header) == value:
                return variant
        if self.sticky_header:
            key = headers.get(self.sticky_header)
            if key:
                return self._by_bucket(zlib.crc32(key.encode()) % 100)
        return self._by_bucket(random.randrange(100))  # noqa: S311  (traffic split)

    def _by_bucket(self, bucket: int) -> str:
        total = 0
        for name, weight in self.weights.items():
            total += weight
            if bucket < total:
                return name
        return max(self.weights, key=lambda n: self.weights[n])

    @property
    def primary(self) -> str:
        return max(self.weights, key=lambda n: self.weights[n])


def router_stats(client: httpx.Client, endpoint: str, since: float) -> dict[str, Any] | None:
    """A router's statistics since ``since`` (unix time); ``None`` if it does not answer."""
    try:
        answer = client.get(f"{endpoint}/router/stats", params={"since": since})
    except httpx.HTTPError:
        return None
    if answer.status_code != 200:
        return None
    data: dict[str, Any] = answer.json()
    return data


def write_routes(path: Path, table: dict[str, Any]) -> None:
    """Replace the routes file in one step, so the router never reads half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(table, sort_keys=True))
    staging.replace(path)


@dataclass
class VariantLoad:
    """In-flight requests of one variant, integrated over time."""

    inflight: int = 0
    pending: int = 0
    answered: int = 0  # since the router started
    area: float = 0.0  # request-seconds in flight
    since: float = field(default_factory=time.monotonic)

    def change(self, delta: int) -> None:
        now = time.monotonic()
        self.area += self.inflight * (now - self.since)
        self.since = now
        self.inflight += delta
        if delta < 0:
            self.answered -= delta

    def area_now(self) -> float:
        return self.area + self.inflight * (time.monotonic() - self.since)


@dataclass
class ShadowStats:
    requests: int = 0
    agree: int = 0
    disagree: int = 0
    errors: int = 0
    dropped: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    last_disagreement: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        latencies = np.asarray(self.latencies_ms) if self.latencies_ms else None
        return {
            "requests": self.requests,
            "agree": self.agree,
            "disagree": self.disagree,
            "errors": self.errors,
            "dropped": self.dropped,
            "p50_ms": float(np.percentile(latencies, 50)) if latencies is not None else 0.0,
            "p99_ms": float(np.percentile(latencies, 99)) if latencies is not None else 0.0,
            "last_disagreement": self.last_disagreement,
        }


class Router:
    """The routing state and the proxy; one per deployment.

    Args:
        routes_path: The JSON file the controller writes.
        payloads: Where shadow comparisons are logged (``None``: not logged).
        timeout: Seconds a replica has to answer.
    """

    def __init__(
        self,
        routes_path: Path,
        payloads: PayloadLogger | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.routes_path = routes_path
        self.payloads = payloads
        self.timeout = timeout
        self.table: RouteTable | None = None
        self._mtime = 0.0
        self.events: deque[tuple[float, str, bool, float]] = deque(maxlen=EVENTS_KEPT)
        self.loads: dict[str, VariantLoad] = {}
        self.shadow = ShadowStats()
        self.metrics = ServingMetrics()
        self._per_replica: dict[str, int] = {}
        self._down: dict[str, float] = {}  # replica -> passed over until (monotonic)
        self._shadow_slots = asyncio.Semaphore(SHADOW_CONCURRENCY)
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._counter = itertools.count()
        self._changed = asyncio.Event()
        self._client: aiohttp.ClientSession | None = None  # made on the serving loop
        self.reload()

    # -- routes ------------------------------------------------------------------------

    def reload(self) -> bool:
        """Read the routes file if it changed; keeps the last good table on a bad file."""
        try:
            mtime = self.routes_path.stat().st_mtime_ns / 1e9
        except FileNotFoundError:
            return False
        if mtime == self._mtime:
            return False
        try:
            table = RouteTable.from_json(json.loads(self.routes_path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            logger.warning("ignoring an unreadable routes file %s", self.routes_path, exc_info=True)
            return False
        self._mtime = mtime
        self.table = table
        for name in table.variants:
            self.loads.setdefault(name, VariantLoad())
        self._changed.set()
        self._changed = asyncio.Event()
        return True

    async def watch(self, interval: float = 0.2) -> None:
        while True:
            await asyncio.sleep(interval)
            self.reload()

    def _table(self) -> RouteTable:
        if self.table is None:
            raise NoReplicaError("the router has no routes yet; the deployment is starting")
        return self.table

    async def _replica(self, variant: str, exclude: frozenset[str] = frozenset()) -> str:
        """The least busy ready replica of ``variant``; waits for one while the variant
        is scaled to zero (the controller sees the waiting request and starts one).
        A replica that refused a connection is passed over for ``DOWN_SECONDS``."""
        table = self._table()
        load = self.loads.setdefault(variant, VariantLoad())
        deadline = time.monotonic() + table.activation_seconds
        while not table.variants[variant].replicas:
            if time.monotonic() >= deadline:
                raise NoReplicaError(
                    f"variant {variant!r} of deployment {table.deployment!r} has no ready "
                    f"replica after {table.activation_seconds:g} s",
                    details={"variant": variant},
                )
            load.pending += 1
            try:
                changed = self._changed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=0.5)
            finally:
                load.pending -= 1
            table = self._table()
            if variant not in table.variants:
                raise NoReplicaError(
                    f"variant {variant!r} was removed", details={"variant": variant}
                )
        replicas = table.variants[variant].replicas
        now = time.monotonic()
        usable = [r for r in replicas if r not in exclude and self._down.get(r, 0.0) <= now] or [
            r for r in replicas if r not in exclude
        ]
        if not usable:
            raise ReplicaUnreachableError(
                f"no replica of variant {variant!r} accepted the connection",
                details={"variant": variant},
            )
        if len(usable) == 1:
            return usable[0]
        first, second = random.sample(usable, 2)  # power of two choices
        busy = self._per_replica
        return first if busy.get(first, 0) <= busy.get(second, 0) else second

    # -- proxying ----------------------------------------------------------------------

    async def proxy(self, request: Request) -> Response:
        body = await request.body()
        table = self._table()
        variant = table.choose(request.headers)
        headers = {h: request.headers[h] for h in FORWARDED_HEADERS if h in request.headers}
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        started = time.perf_counter()
        load = self.loads.setdefault(variant, VariantLoad())
        load.change(+1)
        labels = (table.deployment, variant)
        self.metrics.inflight.labels(*labels).inc()
        status = 502
        route = table.variants.get(variant)
        try:
            answer = await self._send(variant, request.method, path, body, headers)
            status = answer.status_code
        except ModelyardError as exc:
            status = exc.http_status
            return _error(exc, variant)
        finally:
            load.change(-1)
            self.metrics.inflight.labels(*labels).dec()
            seconds = time.perf_counter() - started
            version = route.version if route else ""
            self.metrics.requests.labels(table.deployment, variant, version, str(status)).inc()
            self.metrics.duration.labels(table.deployment, variant, version).observe(seconds)
            self.events.append((time.time(), variant, status < 500, seconds * 1000))
        if table.shadow and random.randrange(100) < table.shadow_percent:  # noqa: S311
            self._mirror(table, request, path, body, headers, answer)
        return Response(
            answer.content,
            status_code=answer.status_code,
            headers={VARIANT_HEADER: variant, **answer.headers},
        )

    async def _send(
        self, variant: str, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> Answer:
        """Send to a replica; one that refuses the connection (it may have just stopped)
        is passed over for the next, any other failure is the answer."""
        tried: set[str] = set()
        while True:
            replica = await self._replica(variant, frozenset(tried))
            tried.add(replica)
            self._per_replica[replica] = self._per_replica.get(replica, 0) + 1
            try:
                return await self.request(method, replica + path, body, headers)
            except aiohttp.ClientConnectorError:
                logger.warning("replica %s of %s refused the connection", replica, variant)
                self._down[replica] = time.monotonic() + DOWN_SECONDS
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ReplicaUnreachableError(
                    f"replica of variant {variant!r} failed: {type(exc).__name__}: {exc}",
                    details={"variant": variant},
                ) from exc
            finally:
                self._per_replica[replica] -= 1

    async def request(self, method: str, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        """One HTTP exchange with a replica, over the router's pooled connections."""
        if self._client is None:
            self._client = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout, connect=5.0),
                connector=aiohttp.TCPConnector(limit=512),
                auto_decompress=False,
            )
        async with self._client.request(method, url, data=body, headers=headers) as answer:
            content = await answer.read()
            kept = {name: answer.headers[name] for name in PASSED_BACK if name in answer.headers}
            return Answer(answer.status, content, kept)

    async def close(self) -> None:
        await self.drain_shadows()
        if self._client is not None:
            await self._client.close()

    # -- shadow ------------------------------------------------------------------------

    def _mirror(
        self,
        table: RouteTable,
        request: Request,
        path: str,
        body: bytes,
        headers: dict[str, str],
        primary: Answer,
    ) -> None:
        """Send a copy to the shadow in the background; never waits, drops when busy.
        Nothing is sent while the shadow has no ready replica (it is starting)."""
        route = table.variants.get(table.shadow or "")
        if route is None or not route.replicas:
            return
        if self._shadow_slots.locked():
            self.shadow.dropped += 1
            return
        trace_id = trace_id_of(
            request.headers.get("traceparent"), request.headers.get("x-request-id")
        )
        task = asyncio.get_running_loop().create_task(
            self._shadow_call(table, path, body, headers, primary, trace_id)
        )
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow_call(
        self,
        table: RouteTable,
        path: str,
        body: bytes,
        headers: dict[str, str],
        primary: Answer,
        trace_id: str | None,
    ) -> None:
        assert table.shadow is not None
        shadow = table.shadow
        async with self._shadow_slots:
            started = time.perf_counter()
            self.shadow.requests += 1
            try:
                route = table.variants.get(shadow)
                if route is None or not route.replicas:
                    raise NoReplicaError(f"shadow {shadow!r} has no ready replica")
                replica = random.choice(route.replicas)  # noqa: S311
                answer = await self.request("POST", replica + path, body, headers)
            except Exception as exc:  # the shadow's failures are only counted
                self.shadow.errors += 1
                logger.info("shadow %s failed: %s", shadow, exc)
                return
            latency_ms = (time.perf_counter() - started) * 1000
            self.shadow.latencies_ms.append(latency_ms)
            if answer.status_code >= 500:
                self.shadow.errors += 1
            agree = answer.status_code == primary.status_code and same_predictions(
                primary.content, answer.content
            )
            if agree:
                self.shadow.agree += 1
            else:
                self.shadow.disagree += 1
                self.shadow.last_disagreement = {
                    "primary": _preview(primary.content),
                    "shadow": _preview(answer.content),
                }
            if self.payloads is not None:
                self.payloads.record(
                    f"{table.deployment}-shadow",
                    f"{table.variants[table.primary].version}-vs-{route.version}",
                    _decoded(body),
                    {
                        "primary": _decoded(primary.content),
                        "shadow": _decoded(answer.content),
                        "agree": agree,
                    },
                    latency_ms,
                    trace_id,
                )

    async def drain_shadows(self) -> None:
        if self._shadow_tasks:
            await asyncio.gather(*self._shadow_tasks, return_exceptions=True)

    # -- statistics --------------------------------------------------------------------

    def stats(self, since: float) -> dict[str, Any]:
        table = self.table
        per_variant: dict[str, list[tuple[bool, float]]] = {}
        for at, variant, ok, ms in reversed(self.events):
            if at < since:
                break
            per_variant.setdefault(variant, []).append((ok, ms))
        names = set(self.loads) | set(per_variant)
        variants: dict[str, Any] = {}
        for name in sorted(names):
            answers = per_variant.get(name, [])
            latencies = np.asarray([ms for _, ms in answers]) if answers else None
            load = self.loads.get(name, VariantLoad())
            route = table.variants.get(name) if table else None
            variants[name] = {
                "requests": len(answers),
                "errors": sum(1 for ok, _ in answers if not ok),
                "p50_ms": float(np.percentile(latencies, 50)) if latencies is not None else 0.0,
                "p99_ms": float(np.percentile(latencies, 99)) if latencies is not None else 0.0,
                "inflight": load.inflight,
                "inflight_area": load.area_now(),
                "answered": load.answered,
                "pending": load.pending,
                "replicas": len(route.replicas) if route else 0,
                "version": route.version if route else "",
                "weight": table.weights.get(name, 0) if table else 0,
            }
        return {
            "generation": table.generation if table else None,
            "now": time.time(),
            "variants": variants,
            "shadow": self.shadow.to_json() if table and table.shadow else None,
        }


def same_predictions(first: bytes, second: bytes, rel: float = 1e-6) -> bool:
    """Whether two answers carry the same predictions (numbers within ``rel``)."""
    a, b = _predictions(first), _predictions(second)
    if a is None or b is None:
        return first == second
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, float | int) and isinstance(y, float | int):
            if abs(x - y) > rel * max(1.0, abs(x), abs(y)):
                return False
        elif x != y:
            return False
    return True


def _predictions(content: bytes) -> list[Any] | None:
    """The answer's values, flattened: V2 outputs' data or MLflow's predictions."""
    try:
        data = json.loads(content)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("outputs"), list):
        values: list[Any] = []
        for output in data["outputs"]:
            values.extend(np.ravel(output.get("data", [])).tolist())
        return values
    if isinstance(data, dict) and "predictions" in data:
        return list(np.ravel(np.asarray(data["predictions"], dtype=object)).tolist())
    return None


def _decoded(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return content.decode("utf-8", errors="replace")


def _preview(content: bytes) -> str:
    return content[:300].decode("utf-8", errors="replace")


def _error(error: ModelyardError, variant: str | None = None) -> Response:
    headers = {VARIANT_HEADER: variant} if variant else None
    return Response(
        json.dumps(error.to_body()),
        status_code=error.http_status,
        media_type=JSON,
        headers=headers,
    )


# -- the app -----------------------------------------------------------------------------


def create_router_app(router: Router) -> Starlette:
    async def proxy(request: Request) -> Response:
        try:
            return await router.proxy(request)
        except ModelyardError as exc:
            return _error(exc)

    async def metadata(request: Request) -> Response:
        """GETs (model metadata, readiness of a model) go to the primary."""
        try:
            table = router._table()
            answer = await router._send(table.primary, "GET", request.url.path, b"", {})
        except ModelyardError as exc:
            return _error(exc)
        return Response(
            answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type", JSON),
        )

    async def live(request: Request) -> Response:
        return Response(b'{"live":true}', media_type=JSON)

    async def ready(request: Request) -> Response:
        table = router.table
        ok = table is not None and any(
            table.variants[name].replicas for name, w in table.weights.items() if w > 0
        )
        return Response(
            json.dumps({"ready": ok}).encode(), status_code=200 if ok else 503, media_type=JSON
        )

    async def stats(request: Request) -> Response:
        try:
            since = float(request.query_params.get("since", "0"))
        except ValueError:
            return _error(
                InvalidInputError("since is a unix time in seconds", code="request/invalid")
            )
        return Response(json.dumps(router.stats(since)).encode(), media_type=JSON)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(router.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        watcher = asyncio.get_running_loop().create_task(router.watch())
        try:
            yield
        finally:
            watcher.cancel()
            await router.close()
            if router.payloads is not None:
                router.payloads.close()

    return Starlette(
        routes=[
            Route("/router/stats", stats, methods=["GET"]),
            Route("/router/health", live, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/v2/health/live", live, methods=["GET"]),
            Route("/v2/health/ready", ready, methods=["GET"]),
            Route("/ping", ready, methods=["GET"]),
            Route("/{path:path}", metadata, methods=["GET"]),
            Route("/{path:path}", proxy, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
