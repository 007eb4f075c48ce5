"""The model repository: the models a server knows, loaded and unloaded at run time
within a memory budget (the V2 protocol's repository extension, as Triton serves it).

Memory: a model is taken to need the growth of the process's resident set while it
loaded and warmed up (psutil), and never less than its folder's size on disk (memory the
allocator reuses from an unloaded model does not show as growth). Without psutil, or
with ``estimate="disk"``, the folder's size is the estimate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ByteSize

from modelyard.errors import (
    InvalidInputError,
    ModelyardError,
    ServiceUnavailableError,
)

if TYPE_CHECKING:
    from modelyard.monitoring.metrics import ServingMetrics

from modelyard.serving.models import (
    FetchedModel,
    LoadOptions,
    ModelLoadError,
    ModelNotServedError,
    ServedModel,
    fetch_model,
    open_model,
)

logger = logging.getLogger(__name__)

MemoryEstimate = Literal["rss", "disk"]


class ModelUnavailableError(ServiceUnavailableError):
    """A known model that is not loaded and cannot be loaded for this request."""

    default_code = "model/unavailable"


class MemoryBudgetError(ModelyardError):
    """A load that does not fit the memory budget, even after unloading idle models."""

    http_status = 507  # Insufficient Storage: what Triton-style clients treat as "no room"
    default_code = "model/memory_budget"


def resident_bytes() -> int | None:
    """This process's resident set size, or ``None`` without psutil."""
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


def _size(count: int) -> str:
    return ByteSize(count).human_readable(separator=" ")


class ModelState(StrEnum):
    """A known model's state, as the V2 repository index names it."""

    READY = "READY"
    LOADING = "LOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass
class RepositoryEntry:
    """A model the server knows, loaded or not, and why not."""

    name: str
    uri: str
    state: ModelState = ModelState.UNAVAILABLE
    reason: str = ""
    model: ServedModel | None = None
    version: str | None = None
    memory_bytes: int = 0  # measured at its last load: what loading it again should need
    last_used: float = 0.0  # time.monotonic() of its last request
    in_flight: int = 0  # requests for it, including those waiting for it to load
    evicted: bool = False  # unloaded to make room: a request loads it again
    loading: asyncio.Task[ServedModel] | None = None
    loading_uri: str | None = None
    reserved_bytes: int = 0  # counted against the budget while it loads

    def describe(self) -> dict[str, Any]:
        """Its entry in the V2 repository index (Triton's fields, and its memory)."""
        entry: dict[str, Any] = {"name": self.name}
        if self.version is not None:
            entry["version"] = self.version
        entry["state"] = self.state.value
        entry["reason"] = self.reason
        entry["memory_bytes"] = self.model.memory_bytes if self.model else 0
        return entry


class ModelRepository:
    """The models a server knows and which of them are loaded, within a memory budget.

    Loads run one at a time, in a thread, so requests to other models go on meanwhile
    and each load's memory growth is its own. When a load would not fit the budget, the
    models idle longest (by last request) with no request in flight are unloaded first;
    a model with a request in flight is never unloaded to make room. A model unloaded to
    make room is loaded again by the next request for it, if the budget allows; one
    unloaded on purpose stays unloaded until it is loaded again.

    Every method is called on the server's event loop.

    Args:
        options: How models are fetched and served.
        memory_budget: Bytes the loaded models may take together; ``None``: no limit.
        estimate: ``"rss"``: a model takes the resident-set growth of its load, at least
            its folder's size (the folder's size without psutil); ``"disk"``: its
            folder's size.
        metrics: Where loads, unloads and memory are counted.
    """

    def __init__(
        self,
        options: LoadOptions | None = None,
        *,
        memory_budget: int | None = None,
        estimate: MemoryEstimate = "rss",
        metrics: ServingMetrics | None = None,
    ) -> None:
        if memory_budget is not None and memory_budget <= 0:
            raise InvalidInputError("the memory budget must be a positive number of bytes")
        self.options = options or LoadOptions()
        self.memory_budget = memory_budget
        self.estimate = estimate
        self.metrics = metrics
        self.entries: dict[str, RepositoryEntry] = {}
        self._retiring_bytes: dict[int, int] = {}  # unloaded models still answering
        self._closing: set[asyncio.Task[None]] = set()
        self._lock: asyncio.Lock | None = None
        if metrics is not None and memory_budget is not None:
            metrics.memory_budget.set(memory_budget)

    # -- what is known ---------------------------------------------------------------

    def adopt(self, model: ServedModel) -> None:
        """Serve a model loaded elsewhere (counted against the budget, never refused).

        Raises:
            InvalidInputError: a model of that name is known already.
        """
        if model.name in self.entries:
            raise InvalidInputError(
                f"two models would be served as {model.name!r}", code="serve/duplicate_name"
            )
        entry = RepositoryEntry(model.name, model.uri)
        self._install(entry, model)

    def entry(self, name: str, version: str | None = None) -> RepositoryEntry:
        """The known model ``name`` (at ``version``, when given).

        Raises:
            ModelNotServedError: no such model (or version) is known here.
        """
        entry = self.entries.get(name)
        if entry is None or (version is not None and version != entry.version):
            wanted = f"{name} version {version}" if version else name
            raise ModelNotServedError(
                f"model {wanted!r} is not served here (serving: {sorted(self.entries)})",
                details={"model": name, "version": version},
            )
        return entry

    def index(self) -> list[RepositoryEntry]:
        return sorted(self.entries.values(), key=lambda e: e.name)

    @property
    def used_bytes(self) -> int:
        """Memory counted against the budget: loaded, loading and retiring models."""
        loaded = sum(e.model.memory_bytes for e in self.entries.values() if e.model)
        reserved = sum(e.reserved_bytes for e in self.entries.values())
        return loaded + reserved + sum(self._retiring_bytes.values())

    @property
    def ready(self) -> bool:
        """Every loaded model is ready (a model not loaded does not count)."""
        return all(e.model.ready for e in self.entries.values() if e.model is not None)

    # -- loading and unloading -------------------------------------------------------

    async def load(self, name: str, uri: str | None = None) -> ServedModel:
        """Load (or load again) the model ``name`` from ``uri``, or from the URI it was
        last loaded from; a model already loaded keeps answering until the new one is
        ready, then makes way for it.

        Raises:
            ModelNotServedError: ``name`` is not known and no ``uri`` is given.
            ModelLoadError: the model cannot be loaded.
            MemoryBudgetError: it does not fit the budget even after unloading idle models.
        """
        entry = self.entries.get(name)
        if entry is None:
            if uri is None:
                raise ModelNotServedError(
                    f"model {name!r} is not known here: give the URI to load it from "
                    '({"parameters": {"uri": "models:/name@alias"}})',
                    details={"model": name},
                )
            entry = self.entries[name] = RepositoryEntry(name, uri)
        target = uri or entry.uri
        if entry.loading is not None:
            if entry.loading_uri == target:
                return await asyncio.shield(entry.loading)
            with contextlib.suppress(ModelyardError):
                await asyncio.shield(entry.loading)
        return await asyncio.shield(self._start_load(entry, target))

    async def unload(self, name: str) -> None:
        """Unload ``name``: new requests are refused at once; requests in flight are
        answered first. It stays known (and unloaded) until it is loaded again.

        Raises:
            ModelNotServedError: no such model is known here.
        """
        entry = self.entry(name)
        if entry.loading is not None:
            with contextlib.suppress(ModelyardError):
                await asyncio.shield(entry.loading)
        model = self._take_out(entry, "unloaded", evicted=False)
        if model is not None:
            await self._retire(model)

    @contextlib.asynccontextmanager
    async def serving(
        self, entry: RepositoryEntry, version: str | None = None
    ) -> AsyncIterator[ServedModel]:
        """The entry's model for one request, loaded again first if it was unloaded to
        make room; it is not unloaded to make room while the request is in flight.

        Raises:
            ModelUnavailableError: it is not loaded and cannot be loaded now.
            ModelNotServedError: it was loaded again at another version than ``version``.
        """
        entry.in_flight += 1
        try:
            model = entry.model if entry.model is not None else await self._available(entry)
            if model is not entry.model:  # unloaded again while this request waited
                raise ModelUnavailableError(
                    f"model {entry.name!r} was unloaded while this request waited for it",
                    details={"model": entry.name, "state": entry.state.value},
                )
            if version is not None and model.version != version:
                raise ModelNotServedError(
                    f"model {entry.name!r} is at version {model.version}, not {version}",
                    details={"model": entry.name, "version": version},
                )
            model.in_flight += 1
            entry.last_used = time.monotonic()
            try:
                yield model
            finally:
                model.in_flight -= 1
                entry.last_used = time.monotonic()
                if model.retiring and model.in_flight == 0:
                    self._close_later(model)
        finally:
            entry.in_flight -= 1

    async def close(self) -> None:
        """Unload every model (the server is stopping)."""
        for entry in self.entries.values():
            if entry.loading is not None:
                entry.loading.cancel()
        models = [e.model for e in self.entries.values() if e.model is not None]
        for entry in self.entries.values():
            entry.model, entry.state, entry.reason = None, ModelState.UNAVAILABLE, "stopped"
        for model in models:
            await model.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # -- inside ----------------------------------------------------------------------

    async def _available(self, entry: RepositoryEntry) -> ServedModel:
        """The model of an entry that has none loaded: the load under way, or a new
        load of a model unloaded to make room."""
        if entry.loading is None and not entry.evicted:
            why = f": {entry.reason}" if entry.reason else ""
            raise ModelUnavailableError(
                f"model {entry.name!r} is not loaded{why}; load it with "
                f"POST /v2/repository/models/{entry.name}/load",
                details={"model": entry.name, "state": entry.state.value},
            )
        try:
            if entry.loading is not None:
                return await asyncio.shield(entry.loading)
            return await asyncio.shield(self._start_load(entry, entry.uri))
        except ModelyardError as exc:
            raise ModelUnavailableError(
                f"model {entry.name!r} is not loaded and cannot be loaded now: {exc.message}",
                details={"model": entry.name, "cause": exc.code},
            ) from exc

    def _start_load(self, entry: RepositoryEntry, uri: str) -> asyncio.Task[ServedModel]:
        if entry.model is None:
            entry.state, entry.reason = ModelState.LOADING, ""
        task = asyncio.get_running_loop().create_task(self._load(entry, uri))
        # Waiters may all have gone (clients that hung up); the outcome is in the entry.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        entry.loading, entry.loading_uri = task, uri
        return task

    async def _load(self, entry: RepositoryEntry, uri: str) -> ServedModel:
        try:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                model = await self._load_fitting(entry, uri)
        except asyncio.CancelledError:
            self._failed(entry, "the server is stopping")
            raise
        except ModelyardError as exc:
            self._failed(entry, exc.message)
            self._count_load(
                entry.name, "refused" if isinstance(exc, MemoryBudgetError) else "failed"
            )
            raise
        except Exception as exc:  # the model's own code (a pyfunc's load_context, ...)
            logger.warning("loading model %s from %s raised", entry.name, uri, exc_info=True)
            error = ModelLoadError(f"cannot load model {uri!r}: {type(exc).__name__}: {exc}")
            self._failed(entry, error.message)
            self._count_load(entry.name, "failed")
            raise error from exc
        finally:
            entry.loading, entry.loading_uri = None, None
        old = entry.model
        self._install(entry, model, uri)
        self._count_load(entry.name, "loaded")
        logger.info(
            "loaded model %s version %s (%s, about %s)",
            model.name,
            model.version,
            model.flavor,
            _size(model.memory_bytes),
        )
        if old is not None:
            await self._retire(old)
        return model

    async def _load_fitting(self, entry: RepositoryEntry, uri: str) -> ServedModel:
        """Fetch, make room for, open and measure one model (under the load lock)."""
        tracking_uri = self.options.tracking_uri
        fetched = await asyncio.to_thread(
            fetch_model, uri, name=entry.name, tracking_uri=tracking_uri
        )
        expected = max(fetched.size_bytes, entry.memory_bytes if uri == entry.uri else 0)
        await self._make_room(expected, entry)
        entry.reserved_bytes = expected
        try:
            model = await asyncio.to_thread(self._open, fetched)
        finally:
            entry.reserved_bytes = 0
        try:
            await self._make_room(model.memory_bytes, entry)
        except MemoryBudgetError:
            await model.close()
            raise
        return model

    def _open(self, fetched: FetchedModel) -> ServedModel:
        """Open a model in a load thread, measuring the resident-set growth."""
        before = resident_bytes() if self.estimate == "rss" else None
        model = open_model(fetched, self.options)
        after = resident_bytes() if before is not None else None
        if before is not None and after is not None:
            model.memory_bytes = max(model.memory_bytes, after - before)
        return model

    async def _make_room(self, needed: int, loading: RepositoryEntry) -> None:
        """Unload the longest-idle models until ``needed`` bytes fit the budget.

        Raises:
            MemoryBudgetError: they would not fit even with every idle model unloaded;
                then nothing is unloaded.
        """
        if self.memory_budget is None:
            return
        free = self.memory_budget - self.used_bytes
        if needed <= free:
            return
        idle = sorted(
            (
                e
                for e in self.entries.values()
                if e is not loading and e.model is not None and e.in_flight == 0 and not e.loading
            ),
            key=lambda e: e.last_used,
        )
        victims: list[RepositoryEntry] = []
        for candidate in idle:
            if free >= needed:
                break
            victims.append(candidate)
            free += candidate.model.memory_bytes if candidate.model else 0
        if free < needed:
            busy = sorted(
                e.name for e in self.entries.values() if e.model is not None and e.in_flight
            )
            raise MemoryBudgetError(
                f"model {loading.name!r} needs about {_size(needed)} but the memory budget "
                f"of {_size(self.memory_budget)} has {_size(max(free, 0))} free even with "
                "every idle model unloaded"
                + (f" ({', '.join(busy)} answering requests)" if busy else ""),
                details={
                    "model": loading.name,
                    "needed_bytes": needed,
                    "budget_bytes": self.memory_budget,
                    "used_bytes": self.used_bytes,
                    "busy": busy,
                },
            )
        reason = f"unloaded to make room for {loading.name!r} (memory budget)"
        # Taken out before any await, so no other load can choose them too.
        closing = [self._take_out(victim, reason, evicted=True) for victim in victims]
        for victim in victims:
            logger.info("unloaded model %s to make room for %s", victim.name, loading.name)
        for model in closing:
            if model is not None:
                await model.close()

    def _install(self, entry: RepositoryEntry, model: ServedModel, uri: str | None = None) -> None:
        entry.model, entry.uri, entry.version = model, uri or model.uri, model.version
        entry.state, entry.reason, entry.evicted = ModelState.READY, "", False
        entry.memory_bytes = model.memory_bytes
        entry.last_used = time.monotonic()
        self.entries[entry.name] = entry
        if self.metrics is not None:
            self.metrics.model_memory.labels(entry.name).set(model.memory_bytes)

    def _take_out(
        self, entry: RepositoryEntry, reason: str, *, evicted: bool
    ) -> ServedModel | None:
        model = entry.model
        entry.model, entry.state, entry.reason = None, ModelState.UNAVAILABLE, reason
        entry.evicted = evicted
        if model is not None and self.metrics is not None:
            self.metrics.model_memory.labels(entry.name).set(0)
            self.metrics.model_unloads.labels(
                entry.name, "evicted" if evicted else "unloaded"
            ).inc()
        return model

    def _failed(self, entry: RepositoryEntry, reason: str) -> None:
        if entry.model is None:  # a model being replaced keeps answering
            entry.state, entry.reason = ModelState.UNAVAILABLE, reason

    def _count_load(self, name: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.model_loads.labels(name, outcome).inc()

    async def _retire(self, model: ServedModel) -> None:
        """Close an unloaded model now, or when its last request is answered."""
        if model.in_flight == 0:
            await model.close()
            return
        model.retiring = True
        self._retiring_bytes[id(model)] = model.memory_bytes

    def _close_later(self, model: ServedModel) -> None:
        model.retiring = False
        self._retiring_bytes.pop(id(model), None)
        task = asyncio.get_running_loop().create_task(model.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
