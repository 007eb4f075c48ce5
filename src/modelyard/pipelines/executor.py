"""The run executor: drives the runs nobody drives, inside ``modelyard up``.

Queued runs (created through the API, by the scheduler or by a retry) and runs whose
engine died are claimed through their lease and driven on one engine, at most
``capacity`` at once, or handed to a :class:`RunDelegate` that has them driven
elsewhere (a Ray run on Kubernetes: a RayJob whose driver drives it). Stopping hands
every run back: its running tasks are stopped and queued again, its lease let go, and
the next executor continues it.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from modelyard.pipelines.engine import RunEngine
from modelyard.pipelines.runs import RunLeasedError, claim, claimable
from modelyard.polling import Poller
from modelyard.specs.runs import RunState

logger = logging.getLogger(__name__)


class RunDelegate(Protocol):
    """Has some runs driven elsewhere than on the executor's engine."""

    def handles(self, run_id: str) -> bool:
        """Whether the run is this delegate's to have driven."""
        ...

    def drive(self, run_id: str, stop: threading.Event) -> RunState:
        """Take over the engine's lease on the run and see it driven to its end (or until
        ``stop``: the run goes on, and the next executor's delegate takes it up again).

        Raises:
            RunLeasedError: the run is no longer the engine's.
        """
        ...


class RunExecutor(Poller):
    """Claims and drives runs on ``engine``.

    Args:
        engine: The engine runs are driven on (its worker pool, and the other runtimes
            runs name, which it opens on first use).
        capacity: How many runs are driven at once.
        poll_seconds: How often the store is asked for runs to pick up.
        delegate: Has the runs it handles driven elsewhere.
    """

    def __init__(
        self,
        engine: RunEngine,
        capacity: int = 4,
        poll_seconds: float = 1.0,
        delegate: RunDelegate | None = None,
    ) -> None:
        super().__init__("modelyard-runs", poll_seconds, capacity)
        self.engine = engine
        self.delegate = delegate
        self.capacity = capacity
        self._active: set[str] = set()
        self._lock = threading.Lock()

    def poll(self) -> list[str]:
        """Claim what there is room for; returns the run ids picked up."""
        with self._lock:
            free = self.capacity - len(self._active)
            busy = set(self._active)
        if free <= 0 or self.stopping.is_set():
            return []
        with self.engine.sessions() as session:
            candidates = [r for r in claimable(session, free + len(busy)) if r not in busy]
        picked = []
        for run_id in candidates[:free]:
            if not claim(
                self.engine.sessions, run_id, self.engine.owner, self.engine.settings.lease
            ):
                continue  # another executor was faster
            with self._lock:
                self._active.add(run_id)
            assert self.threads is not None
            self.threads.submit(self._drive, run_id)
            picked.append(run_id)
        return picked

    def _drive(self, run_id: str) -> None:
        try:
            if self.delegate is not None and self.delegate.handles(run_id):
                state = self.delegate.drive(run_id, self.stopping)
            else:
                state = self.engine.execute(run_id, stop=self.stopping)
            logger.info("run %s is %s", run_id, state.value)
        except RunLeasedError:
            logger.info("run %s was taken by another engine", run_id)
        except Exception:
            logger.exception("run %s: the engine failed; it will be picked up again", run_id)
        finally:
            with self._lock:
                self._active.discard(run_id)
