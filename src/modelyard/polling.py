"""Background pollers, the shape of every controller: a thread that calls ``poll()``
every ``poll_seconds`` until stopped, surviving a store that is briefly down, and a pool
of threads for the work a poll starts."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

logger = logging.getLogger(__name__)


class Poller:
    """Subclasses implement :meth:`poll`; work they start goes to ``self.threads``.

    Args:
        name: The thread names' prefix.
        poll_seconds: The pause between polls.
        capacity: Threads for the work polls start (0: none).
    """

    def __init__(self, name: str, poll_seconds: float, capacity: int = 0) -> None:
        self.name = name
        self.poll_seconds = poll_seconds
        self.stopping = threading.Event()
        self.threads = (
            ThreadPoolExecutor(capacity, thread_name_prefix=name) if capacity > 0 else None
        )
        self._poller: threading.Thread | None = None

    def poll(self) -> Any:
        raise NotImplementedError

    def start(self) -> None:
        self.stopping.clear()
        self._poller = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._poller.start()

    def stop(self) -> None:
        """Stop polling, then wait for the work started (which sees ``stopping``)."""
        self.stopping.set()
        if self._poller is not None:
            self._poller.join(timeout=30)
        if self.threads is not None:
            self.threads.shutdown(wait=True)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.poll()
            except Exception:  # the store is down: try again next time
                logger.exception("%s: a poll failed", self.name)
            self.stopping.wait(self.poll_seconds)
