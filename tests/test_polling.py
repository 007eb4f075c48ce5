"""The pollers behind every controller keep polling after a failed poll."""

from __future__ import annotations

import threading

from modelyard.polling import Poller


class Flaky(Poller):
    def __init__(self) -> None:
        super().__init__("test-poller", poll_seconds=0.01, capacity=1)
        self.calls = 0
        self.twice = threading.Event()

    def poll(self) -> None:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("the store is down")
        assert self.threads is not None
        self.threads.submit(self.twice.set)


def test_a_failed_poll_is_logged_and_polling_goes_on() -> None:
    poller = Flaky()
    poller.start()
    try:
        assert poller.twice.wait(timeout=10), "no poll after the failed one"
    finally:
        poller.stop()
    calls = poller.calls
    assert calls >= 2
    assert poller.stopping.is_set()
    assert poller.calls == calls  # stopped: no more polls
